// Package store owns the scheduler's durable state: the Task and Attempt records, the
// task state machine (Next, the transition table) and the Store interface every backend
// implements. Backends: store/sqlite (embedded, the default) and store/postgres; both
// pass the same contract suite, store/storetest.Run.
//
// The Store interface is deliberately narrow: the scheduler builds every state change
// with Transition (the one home of what each event does: Next's state, the states the
// update may apply from, the lease that fences it, how the attempt ends) and asks the
// store to apply it as a compare-and-swap on (state, lease id), so that two racing
// changes can never both apply.
//
// A task created with Upstreams (pipelines) starts Waiting rather than Queued; events
// upstreams_done (to Queued, with Update.InputBlobs the resolved inputs), upstream_lost
// (to Failed) and cancel take it out. List returns Upstreams, so the server reloads the
// waiting set with List(State: Waiting) (migration 00008 in both backends).
//
// An attempt ends with its FailureKind (Update.FailureKind with EndAttempt): what kind
// of failure it was, as data, so that nothing has to read it out of the error text.
//
// TenantStore keeps client tokens (only their SHA-256), counts and reads a tenant's
// tasks (limits, fair sharing), and sums attempts' usage (Usage: wall, CPU, memory ×
// wall, blob bytes in and out, host) by tenant.
//
//	CGO_ENABLED=0 go test -count=1 ./sched/store/...
package store
