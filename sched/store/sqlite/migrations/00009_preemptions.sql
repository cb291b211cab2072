-- +goose Up
-- Preemptions count the attempts of a task that ended because the server preempted it
-- (a batch task stopped to give its slot to an online one): they are not charged
-- against max_attempts (store.Next).
ALTER TABLE tasks ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE tasks DROP COLUMN preemptions;
