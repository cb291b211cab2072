-- +goose Up
-- The random secret of the current lease (Assign.lease_secret): every message about a
-- lease must carry it.
ALTER TABLE tasks ADD COLUMN lease_secret TEXT NOT NULL DEFAULT '';

-- When a blob was last referenced (a submit naming it, a client's HEAD or PUT of it):
-- retention keeps a blob referenced within its retention even if no task names it yet.
CREATE TABLE blob_refs (
    digest   TEXT    NOT NULL PRIMARY KEY,
    last_ref INTEGER NOT NULL
) WITHOUT ROWID;

-- +goose Down
DROP TABLE blob_refs;
ALTER TABLE tasks DROP COLUMN lease_secret;
