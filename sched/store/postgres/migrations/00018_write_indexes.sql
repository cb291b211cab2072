-- +goose Up
-- Fewer index entries per state change (PostgreSQL only; the SQLite store has no
-- 00018). A change of state cannot be a HOT update, so it adds an entry to every index
-- whose predicate the new row matches; these were updated by every change and are
-- needed only for some rows:
--   tasks_state_seq duplicated tasks_state (state, seq);
--   tasks_finished serves retention (DeleteFinished), which reads only finished tasks;
--   tasks_tenant_ready serves ReadyTenant and the tenant's queued count (max_queued),
--   which read only queued tasks;
--   attempts_finished serves usage (Usage), which reads only finished attempts.
DROP INDEX tasks_state_seq;
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (state, finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled', 'dead');
DROP INDEX tasks_tenant_ready;
CREATE INDEX tasks_tenant_ready ON tasks (tenant, type, priority DESC, seq) WHERE state = 'queued';
DROP INDEX attempts_finished;
CREATE INDEX attempts_finished ON attempts (finished_at) WHERE finished_at > 0;

-- +goose Down
DROP INDEX attempts_finished;
CREATE INDEX attempts_finished ON attempts (finished_at);
DROP INDEX tasks_tenant_ready;
CREATE INDEX tasks_tenant_ready ON tasks (tenant, state, type, priority DESC, seq);
DROP INDEX tasks_finished;
CREATE INDEX tasks_finished ON tasks (state, finished_at);
CREATE INDEX tasks_state_seq ON tasks (state, seq);
