-- +goose Up
-- The tenants that may read a blob through the client API because they uploaded it
-- (its bytes checked against its digest). A tenant may also read the blobs its own
-- tasks name (task_blobs); those need no row here.
CREATE TABLE blob_grants (
    digest     TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (digest, tenant)
);

-- +goose Down
DROP TABLE blob_grants;
