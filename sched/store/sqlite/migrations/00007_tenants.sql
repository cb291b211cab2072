-- +goose Up
-- Client tokens (store.Token): only the SHA-256 of each token is kept.
CREATE TABLE tokens (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    admin       INTEGER NOT NULL DEFAULT 0,
    hash        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER NOT NULL DEFAULT 0
);
-- Accounting (store.Usage): where an attempt ran, its agent's memory, the blob bytes it moved.
ALTER TABLE attempts ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE attempts ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN bytes_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN bytes_out INTEGER NOT NULL DEFAULT 0;
CREATE INDEX attempts_finished ON attempts (finished_at);
-- A tenant's ready tasks (fair sharing) and its queued count (limits).
CREATE INDEX tasks_tenant_ready ON tasks (tenant, state, type, priority DESC, seq);

-- +goose Down
DROP INDEX tasks_tenant_ready;
DROP INDEX attempts_finished;
ALTER TABLE attempts DROP COLUMN bytes_out;
ALTER TABLE attempts DROP COLUMN bytes_in;
ALTER TABLE attempts DROP COLUMN memory_bytes;
ALTER TABLE attempts DROP COLUMN host;
DROP TABLE tokens;
