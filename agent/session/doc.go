// Package session is the agent's side of the session with the Paddock server
// (api/agent/v1): it dials the server (TCP to the agent port, or a relayed
// virtio-serial stream through agent/transport), registers the task types its
// Executor serves with their slots, heartbeats (renewing the leases of the tasks it
// runs), runs assignments through the Executor with a concurrency limit per type
// from the agent's allocator (agent/alloc: a total shared among the types, each
// with a minimum, the extra slots rebalanced every heartbeat interval toward the
// types whose queuing delay — measured by the server and sent back in answer to
// each heartbeat — is furthest above their tolerable delay; see Session),
// cancels them when the server says so, reports results with their sha256 until the
// server acknowledges them, and reconnects with backoff whenever the stream breaks,
// telling the server which tasks it still runs.
//
// Live logs (livelog.go): while a task runs, the lines its handler logs (Task.OnLog)
// go to a server that lists the "log-chunks" capability in LogChunk messages, every
// LogChunkInterval (250 ms) or as soon as LogChunkBytes (32 KiB) wait. A chunk waits
// (up to 1 MiB, then the oldest lines are dropped and counted) while there is no
// connection or the send queue is half full, and never ends the connection; chunks
// are not resent, so a connection that breaks can lose the lines of the chunks in
// flight. The Report carries only the lines no chunk carried. A task that logs nothing
// costs no live-log goroutine (it starts with the first line).
//
// Batching (batch.go): the session lists the "batch" capability in its Register and
// applies the server's ServerBatch messages (report acks, then assigns); to a server
// that lists it in Registered, the sender sends the acks and reports queued at once as
// one AgentBatch (nothing waits to fill one). Task goroutines are reused (spawn), so
// their stacks do not grow anew for every task.
//
// Batched execution (execbatch.go): the assigns of one ServerBatch that can start at
// once (no input blobs to wait for) run, per type, in ExecuteBatch calls of up to 64
// tasks when the Executor is a BatchExecutor (RunnerExecutor is: one HandleBatch call
// to the handler, plugins/runner.ExecuteBatch); each task still has its own context
// (a server cancel reaches it alone), slot, result and report, sent as soon as its
// own result is in. A type with one ready task, and an Assign that came alone, run
// one by one as before: nothing waits for company.
//
// Tasks sent ahead (queue.go; the "queue-ahead" capability, listed in every Register):
// the server may send transient stream items beyond the type's free slots
// (Assign.may_queue). The session acknowledges them at once and queues them on the
// allocator (alloc.Enqueue: within the type's limit, in order); each starts as soon as
// a run of its type ends and frees a slot (those granted meanwhile in one ExecuteBatch
// call), its timeout counted from its start. The agent's limits hold for what runs.
//
// Preemption (the "preempt-handover" capability, listed in every Register): a Cancel of
// kind PREEMPTED stops a batch task, which drops without reporting. When the server
// hands the slot straight to an online task, that task's Assign follows the cancel and
// names the preempted run in replaces_task_id: the session releases the preempted
// run's allocator slot at once (the handler may still be returning) and admits the
// online task, so for the teardown one task per preempted slot runs over the limit,
// never more (a slot is released once). TestPreemptHandover; end to end,
// TestPreemptHandsOverWithoutHeartbeat in sched.
//
// The data plane (docs/dataplane.md): an assignment with input blobs names its data
// path. Under DATA_PATH_SHARED (a guest whose host stages) the session acks at once,
// then waits for the host's staging marker (api/guestabi) under Config.InRoot while
// heartbeats keep renewing the lease, checks the staged files' sizes, and runs the
// task with their paths and an output directory under Config.OutRoot, where the host
// collects the output files. Under DATA_PATH_STREAM (TCP agents) it fetches each input
// with AgentService.ReadBlob on the session's own connection into Config.DataDir
// (hashing, verifying, resuming a cut stream), and stores each output file with
// WriteBlob before it reports; the lease's directory goes once the report is
// acknowledged. Either way the report names the output files as output blobs.
//
// A failed report carries its failure kind (Report.failure_kind), set where the failure
// happened: RunnerExecutor maps plugins/runner's Reason (crashed, timeout, panic,
// output too large, handler error, ...), the data path sets input_unavailable,
// output_transfer, bad_output or output_too_large, and a context that ended says
// timeout (its deadline) or cancelled; a client's cancel is always cancelled.
//
// The Executor interface is narrow so unit tests can use a fake; RunnerExecutor adapts
// plugins/runner (real handler subprocesses). The end-to-end tests with real agent
// processes live in package sched:
//
//	CGO_ENABLED=0 go test -count=1 ./agent/session ./sched
//
// The data plane's unit tests (data_test.go, stream_test.go) use temporary
// directories for the guest's shares and a fake blob server; the end-to-end test with
// the real agent binary and handler is TestStreamDataPathRealAgent in package agent.
// (TestAllocationFollowsQueueDelay in sched is the end-to-end test of the allocator.)
package session
