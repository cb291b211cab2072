-- +goose Up
-- What the handler logged during each attempt of a task (bounded by the agent):
-- lines is a JSON array of {"t": time, "l": level, "m": text}, oldest first.
CREATE TABLE task_logs (
    task_id       TEXT    NOT NULL,
    attempt       INTEGER NOT NULL,
    dropped_lines BIGINT  NOT NULL DEFAULT 0,
    dropped_bytes BIGINT  NOT NULL DEFAULT 0,
    lines         TEXT    NOT NULL,
    PRIMARY KEY (task_id, attempt)
);

-- +goose Down
DROP TABLE task_logs;
