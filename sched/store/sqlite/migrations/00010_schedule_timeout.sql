-- +goose Up
-- When a task still queued and never started fails with kind schedule_timeout (unix
-- ms: its creation plus its schedule-to-start timeout); 0: never.
ALTER TABLE tasks ADD COLUMN schedule_deadline BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tasks_schedule_deadline ON tasks (schedule_deadline) WHERE schedule_deadline > 0 AND state = 'queued';

-- +goose Down
DROP INDEX tasks_schedule_deadline;
ALTER TABLE tasks DROP COLUMN schedule_deadline;
