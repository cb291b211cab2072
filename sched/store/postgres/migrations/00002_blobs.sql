-- +goose Up
-- A task's blob references: JSON maps name -> {digest, size}.
ALTER TABLE tasks ADD COLUMN input_blobs TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN output_blobs TEXT NOT NULL DEFAULT '';

-- Every blob a task names, one row per (task, role, name), written in the same
-- transaction as the task: retention asks "is this digest still used?" by digest.
CREATE TABLE task_blobs (
    digest   TEXT NOT NULL,
    task_id  TEXT NOT NULL,
    role     TEXT NOT NULL, -- 'in' or 'out'
    name     TEXT NOT NULL,
    PRIMARY KEY (digest, task_id, role, name)
);
CREATE INDEX task_blobs_task ON task_blobs (task_id, role);

-- +goose Down
DROP TABLE task_blobs;
ALTER TABLE tasks DROP COLUMN output_blobs;
ALTER TABLE tasks DROP COLUMN input_blobs;
