-- +goose Up
-- Pipelines: a task's upstream inputs, a JSON map input name -> {task, output}. A task
-- with upstreams is created 'waiting' and becomes 'queued' once they all succeeded.
ALTER TABLE tasks ADD COLUMN upstreams TEXT NOT NULL DEFAULT '';
-- The server reloads the waiting set at start (List by state).
CREATE INDEX tasks_state_seq ON tasks (state, seq);

-- +goose Down
DROP INDEX tasks_state_seq;
ALTER TABLE tasks DROP COLUMN upstreams;
