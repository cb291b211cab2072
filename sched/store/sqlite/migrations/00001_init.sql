-- +goose Up
CREATE TABLE tasks (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    type              TEXT    NOT NULL,
    payload           BLOB,
    inputs            BLOB,
    priority          INTEGER NOT NULL DEFAULT 0,
    class             TEXT    NOT NULL,
    requirements      TEXT    NOT NULL DEFAULT '{}',
    timeout_ms        INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    idempotency_key   TEXT    NOT NULL DEFAULT '',
    tenant            TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    lease_id          INTEGER NOT NULL DEFAULT 0,
    agent_id          TEXT    NOT NULL DEFAULT '',
    lease_expires_at  INTEGER NOT NULL DEFAULT 0,
    not_before        INTEGER NOT NULL DEFAULT 0,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    output            BLOB,
    outputs           BLOB,
    output_sha256     TEXT    NOT NULL DEFAULT '',
    error             TEXT    NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    leased_at         INTEGER NOT NULL DEFAULT 0,
    started_at        INTEGER NOT NULL DEFAULT 0,
    finished_at       INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX tasks_ready ON tasks (state, type, priority DESC, seq);
CREATE INDEX tasks_lease_expiry ON tasks (state, lease_expires_at);

CREATE TABLE attempts (
    task_id      TEXT    NOT NULL,
    number       INTEGER NOT NULL,
    lease_id     INTEGER NOT NULL,
    agent_id     TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    error        TEXT    NOT NULL DEFAULT '',
    retryable    INTEGER NOT NULL DEFAULT 0,
    wall_ms      INTEGER NOT NULL DEFAULT 0,
    cpu_ms       INTEGER NOT NULL DEFAULT 0,
    sha256       TEXT    NOT NULL DEFAULT '',
    leased_at    INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, number)
);

-- +goose Down
DROP TABLE attempts;
DROP TABLE tasks;
