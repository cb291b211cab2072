-- +goose Up
-- Retention deletes finished tasks by state and age (Store.DeleteFinished).
CREATE INDEX tasks_finished ON tasks (state, finished_at);

-- +goose Down
DROP INDEX tasks_finished;
