// Package sqlite is the embedded SQLite implementation of store.Store (pure Go:
// modernc.org/sqlite, so the server builds with CGO_ENABLED=0). One database file in
// WAL mode; the schema is versioned with goose migrations embedded in the binary.
//
// Durability: by default synchronous=FULL: a commit (an acknowledged submit, a
// recorded result) is on disk when it returns, surviving a power loss or kernel crash,
// at the cost of an fsync per group commit. Options.Synchronous "NORMAL"
// (server.sqlite_synchronous) syncs only at WAL checkpoints: it survives the server
// process being killed at any point (kill -9) but may lose the last commits on a power
// loss. BenchmarkSynchronous measures both in one run.
//
// Files: the database, its -wal and -shm are 0600 whatever the umask, and a missing
// directory is created 0700 (they hold every task's payload and output).
//
// Group commit: all changes go through one writer goroutine, which runs the changes
// waiting at the same time in one transaction (statements prepared once on the writer
// connection) and answers each caller only after that transaction committed.
//
// Blob references: a task's input and output blobs are JSON columns of tasks, and one
// row each in task_blobs (digest, task, role, name), written in the same transaction,
// so that BlobInUse is one indexed lookup by digest.
//
//	CGO_ENABLED=0 go test -count=1 ./sched/store/sqlite
package sqlite
