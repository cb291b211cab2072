// Package sched owns the server: the durable task queue (package sched/store), the
// task state machine, the agent registry, placement, leases with fencing tokens,
// retries, the results archive, the client API and the server's metrics.
//
// A Server serves two ports: the agent port (grpc-go, api/agent/v1: one Session stream
// per agent) and the client port (connect-go, api/paddock/v1: gRPC and JSON over HTTP,
// plus /metrics and /healthz).
//
// Tests: unit tests run against a real SQLite file with in-process agents; the
// integration tests (real_test.go) build the test agent (sched/internal/testagent) and
// the test handler (plugins/handlers/testhandler) and run the server as a subprocess
// (sched/internal/testserver) when they kill it:
//
//	CGO_ENABLED=0 go test -count=1 ./sched/...
//	CGO_ENABLED=0 go test -run '^$' -bench . ./sched     # tasks/s end to end, latency p50/p99
package sched
