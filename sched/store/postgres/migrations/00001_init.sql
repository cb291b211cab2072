-- +goose Up
-- Mirrors sched/store/sqlite/migrations (same versions, same columns): times are Unix
-- milliseconds (0: unset), maps are JSON.
CREATE TABLE tasks (
    seq               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    type              TEXT    NOT NULL,
    payload           BYTEA,
    inputs            BYTEA,
    priority          INTEGER NOT NULL DEFAULT 0,
    class             TEXT    NOT NULL,
    requirements      TEXT    NOT NULL DEFAULT '{}',
    timeout_ms        BIGINT  NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    idempotency_key   TEXT    NOT NULL DEFAULT '',
    tenant            TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    lease_id          BIGINT  NOT NULL DEFAULT 0,
    agent_id          TEXT    NOT NULL DEFAULT '',
    lease_expires_at  BIGINT  NOT NULL DEFAULT 0,
    not_before        BIGINT  NOT NULL DEFAULT 0,
    cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    output            BYTEA,
    outputs           BYTEA,
    output_sha256     TEXT    NOT NULL DEFAULT '',
    error             TEXT    NOT NULL DEFAULT '',
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    leased_at         BIGINT  NOT NULL DEFAULT 0,
    started_at        BIGINT  NOT NULL DEFAULT 0,
    finished_at       BIGINT  NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key) WHERE idempotency_key <> '';
-- Only queued tasks are looked up by readiness, and only live ones by expiry: partial
-- indexes stay small however many finished tasks the table keeps.
CREATE INDEX tasks_ready ON tasks (type, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE state IN ('leased', 'running');
CREATE INDEX tasks_state ON tasks (state, seq);

CREATE TABLE attempts (
    task_id      TEXT    NOT NULL,
    number       INTEGER NOT NULL,
    lease_id     BIGINT  NOT NULL,
    agent_id     TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    error        TEXT    NOT NULL DEFAULT '',
    retryable    BOOLEAN NOT NULL DEFAULT FALSE,
    wall_ms      BIGINT  NOT NULL DEFAULT 0,
    cpu_ms       BIGINT  NOT NULL DEFAULT 0,
    sha256       TEXT    NOT NULL DEFAULT '',
    leased_at    BIGINT  NOT NULL,
    finished_at  BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, number)
);

-- +goose Down
DROP TABLE attempts;
DROP TABLE tasks;
