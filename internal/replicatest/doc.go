// Package replicatest holds the tests of several `paddock server` replicas on one
// PostgreSQL store: real server processes (the built binary, killed with SIGKILL),
// a real PostgreSQL (sched/store/postgres/pgtest), light in-process agents over real
// TCP (agent/session with a list of servers), clients that fail over between replicas.
//
// It has no code of its own besides the harness in its tests. They skip, saying how to
// fix it, when PostgreSQL is not installed (PADDOCK_REQUIRE_VM=1 makes that a failure):
//
//	go test -count=1 -v -run TestKillReplica ./internal/replicatest      # 2,000 tasks
//	PADDOCK_REPLICA_TASKS=10000 go test -count=1 -v -timeout 30m -run TestKillReplica ./internal/replicatest
//	go test -run '^$' -bench Replicas -benchtime 3000x ./internal/replicatest   # 3 replicas vs 1
package replicatest
