-- +goose Up
-- How a task that failed without an attempt failed (schedule_timeout, upstream_failed);
-- '' for every other task (an attempt's kind is in attempts.failure_kind).
ALTER TABLE tasks ADD COLUMN failure_kind TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE tasks DROP COLUMN failure_kind;
