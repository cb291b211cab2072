-- +goose Up
-- Preemptions count the attempts of a task that ended because the server preempted it
-- (a batch task stopped to give its slot to an online one): they are not charged
-- against max_attempts (store.Next).
ALTER TABLE tasks ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
-- Ready returns a type's online tasks before its batch ones: this index finds them
-- without scanning a long batch queue.
CREATE INDEX tasks_ready_online ON tasks (type, priority DESC, seq) WHERE state = 'queued' AND class = 'online';

-- +goose Down
DROP INDEX tasks_ready_online;
ALTER TABLE tasks DROP COLUMN preemptions;
