// Package postgres is the PostgreSQL implementation of store.Store (pgx v5, pure Go),
// for several paddock servers sharing one queue. The schema mirrors the SQLite store's
// (same goose migration versions up to 00017, same columns) and is migrated at Open under a
// session advisory lock, so replicas may start together; a schema newer than the
// binary's is refused.
//
// Every change is one SQL statement (data-modifying CTEs), committed before the call
// returns (PostgreSQL's synchronous_commit decides durability). The statements of
// concurrent Create, Lease, Update and Renew calls are group-committed (commit.go): one
// writer sends every statement waiting as one pgx batch, one round trip and one
// implicit transaction, in task id order, and answers each caller after the commit; a
// batch the server refuses is run again one statement at a time. Eight or more writes of
// one statement text on distinct tasks (submits without blobs, reports of one shape) run
// as one statement over arrays (merge.go), as River's completer marks many jobs done in
// one UPDATE. A batch is the same as its statements run one after another, so each
// keeps its guarantee:
//   - Update is a compare-and-swap on (state, lease id) decided by the row lock: of two
//     racing changes, the second re-reads the row after the first commits and no
//     longer matches, so it returns ErrConflict with the task as it is.
//   - Lease locks the granted rows FOR UPDATE SKIP LOCKED and checks they are still
//     queued: servers leasing the same task at once never both get it, and none waits
//     for another.
//   - Create inserts with ON CONFLICT on the idempotency key, so concurrent submissions
//     with one key create one task.
//
// Wake-ups across servers: with Options.Notify, a change that queues a task sends its
// type on NotifyChannel, and a cancel request of a leased or running task its id on
// CancelChannel; Store.Notify and Store.Wakeups (store.Shared) deliver them. They are
// sent right after the change commits, many in one statement (announce.go): a
// pg_notify inside the task statements would make PostgreSQL commit them one at a
// time.
//
// Tests start a real PostgreSQL server (see pgtest; `make setup` installs it):
//
//	go test -count=1 ./sched/store/postgres/...
//	go test -run '^$' -bench Durable -benchtime 3000x ./sched/store/postgres   # SQLite vs PostgreSQL
//	cd sched/store/postgres/riverbench && go test -run '^$' -bench . -benchtime 3000x   # vs River
//
// The benchmarks also report the server's and the benchmark's CPU time per task
// (pg-cpu-µs/op, go-cpu-µs/op): on a shared machine they vary less than the rates.
//
// The River baseline is a module of its own (riverbench) so that Paddock does not
// depend on River.
//
// Migration 00018 drops a duplicate index and makes three partial, since a change of
// state adds an entry to every index whose predicate the new row matches (the SQLite
// store's 00018 does the same for its own indexes).
package postgres
