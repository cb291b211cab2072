-- +goose Up
-- Indexes that hold only the rows their queries read: a task's state changes three
-- times (queued -> leased -> running -> final) and each change moved the task's entry
-- in every index that began with its state. Now an entry is added or removed only when
-- the task enters or leaves the set an index is for.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (type, priority DESC, seq) WHERE state = 'queued';
DROP INDEX tasks_tenant_ready;
CREATE INDEX tasks_tenant_ready ON tasks (tenant, type, priority DESC, seq) WHERE state = 'queued';
DROP INDEX tasks_lease_expiry;
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE state IN ('leased', 'running');
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (state, finished_at) WHERE finished_at > 0;
DROP INDEX attempts_finished;
CREATE INDEX attempts_finished ON attempts (finished_at) WHERE finished_at > 0;

-- +goose Down
DROP INDEX attempts_finished;
CREATE INDEX attempts_finished ON attempts (finished_at);
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (state, finished_at);
DROP INDEX tasks_lease_expiry;
CREATE INDEX tasks_lease_expiry ON tasks (state, lease_expires_at);
DROP INDEX tasks_tenant_ready;
CREATE INDEX tasks_tenant_ready ON tasks (tenant, state, type, priority DESC, seq);
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (state, type, priority DESC, seq);
