// Package sched owns the server: the durable task queue (package sched/store), the
// task state machine, the agent registry, placement, leases with fencing tokens,
// retries, the results archive, the client API and the server's metrics.
//
// A Server serves two ports: the agent port (grpc-go, api/agent/v1: one Session stream
// per agent) and the client port (connect-go, api/paddock/v1: gRPC and JSON over HTTP,
// plus /metrics and /healthz), and optionally the cluster port for host daemons
// (api/host/v1 over mutual TLS).
//
// The data plane (docs/dataplane.md) is the server's part of moving blobs: with
// Config.Blobs set, the client port serves /v1/blobs (blob/blobhttp); submit checks a
// task's input blobs exist; dispatch picks each assignment's data path (DATA_PATH_SHARED
// for a guest whose host registered the "stage" capability: the host stages the inputs
// from the task's KIND_STARTED event and collects the outputs on a Collect; otherwise
// DATA_PATH_STREAM: the agent calls ReadBlob and WriteBlob on the agent port, allowed
// only for a live lease it holds on its own connection); a success with output blobs is
// recorded only once they are in the store; CollectGarbage deletes blobs unused past
// Config.BlobRetention (store.BlobInUse). Hosts use StatBlob/ReadBlob/WriteBlob on the
// cluster port. A submit naming a blob, and a client's HEAD or PUT of one, refresh its
// retention clock (store.TouchBlobs) before checking it exists; retention's check and
// delete of a blob exclude touches (gcMu), so a blob a client was told exists is not
// deleted before the task naming it is stored.
//
// The web console (package sched/console) is mounted on the client port under /ui
// (clientport.go): its static page needs no token, its live feed /ui/events does. The
// feed is fed by observedStore (events.go), which wraps the store and publishes every
// task change Create, CreateBatch, CreateLease, Lease, Update and UpdateLease make; the same changes feed the history of the
// last hour (history.go: 10 s samples behind ClusterService.History) and the
// TaskService.WatchTasks stream (watch.go: the first list, then each change of a matching
// task; paddock task ls --watch). The client port also serves grpc.health.v1 (SERVING
// while the store answers) and gRPC reflection (grpcext.go). Explain
// (explain.go) says why a task is still queued from the server's own view of agents,
// pools and the store; Retry submits a failed, dead or cancelled task's spec again as a
// new task.
//
// Limits against hostile peers (hardening_test.go tests each): the client token is
// checked before any body byte is read, API bodies in flight share a byte budget and
// every body read has a progress deadline (clientport.go); outside dev mode an agent
// port needs Config.AgentToken (constant-time compare); every assignment carries a
// random lease secret (Assign.lease_secret) that acks, reports, renewals, reconnects
// and blob RPCs must echo; agents declare at most MaxAgentTypes types, MaxTypeSlots
// slots a type and MaxTotalSlots in all, and get at most MaxUnacked assignments they
// have not acked; task specs are bounded field by field (MaxTimeout, labels, ...); a
// host hears the backlog of its pools' types only; /metrics carries at most
// MaxMetricTypes task type label values; idle agent-port connections are closed
// (Config.AgentIdleTimeout); and no lease expires in the first LeaseTTL after a start,
// so agents can reconnect after a restart.
//
// Several replicas (replica.go): over a store.Shared store (PostgreSQL) any number of
// servers share one queue. Each has a replica id (Config.ReplicaID), dispatches to its
// own agents, and learns what the others change from the store: queued types and
// cancels through store wake-ups (LISTEN/NOTIFY), cancels and leases ended elsewhere
// through a read of the live tasks every Config.SyncInterval, and a waited-on task's
// end by re-reading it. TestReplicas runs two in-process replicas on a real PostgreSQL;
// internal/replicatest kills one of three `paddock server` processes mid-run.
//
// Tenants (auth.go, fair.go, tenantapi.go; package sched/tenant): every client call is
// authenticated to a tenant.Principal in the request context: server.token is the admin
// of tenant "default", other tokens are looked up by SHA-256 in the store on every
// request (no cache, so a revoke holds from the next request on every replica). A
// task's tenant is its token's (assignTenant; an admin may name one); a non-admin sees
// only its tenant's tasks: Get, Wait, Cancel, Retry, Explain and Logs answer "not found"
// for another's (visible), List is narrowed, and the console feed filtered (tenantFeed).
// max_queued is checked at submit; with Config.Tenants set, dispatch reads each
// configured tenant's ready tasks and orders them by weighted fair sharing of slots
// (tenant.Order), holding tenants at max_running. TenantService manages tokens (admin
// only) and sums usage: each report stores the attempt's wall, CPU, the agent's memory,
// the blob bytes in and out and the host (attemptUsage), counted by tenant in /metrics.
// Tests: go test -run 'TestTenant|TestUsage' ./sched/
//
// Every attempt that ends in a failure is stored with its kind (store.FailureKind,
// served as Attempt.failure_kind): the agent's Report.failure_kind, or one the server
// sets itself (lease_expired, guest_gone, refused; bad_output, output_too_large and
// output_transfer for outputs it checks). Retry policy reads the kind, never the
// error text: output_too_large is not retried even when the agent calls it
// retryable, because the same task would produce the same output (failurekind.go,
// TestRealFailureKinds, TestServerFailureKinds).
//
// Task logs (tasklogs.go): a running task's LogChunks (sent by agents the Registered
// message's "log-chunks" capability allows) are appended to the attempt's log after the
// lease checks a Report gets (agent, lease id, secret; a refused chunk is dropped and
// counted in paddock_log_chunks_total{outcome="refused"}), and an accepted report's log
// (Report.log: the lines no chunk carried) is appended too (store.LogStore.AppendLog,
// the newest store.MaxAttemptLogBytes kept); each append sends the console feed a "log"
// event. TaskService.Logs serves them. Submit and Get warn when no connected agent and
// no host pool serves a queued task's type: the warning is Explain's NO_SERVER reason.
//
// Schedule-to-start timeouts (schedtimeout.go): a task with a schedule deadline
// (TaskSpec.schedule_to_start_timeout_ms, else Config.ScheduleToStartTimeout) that no
// agent started by then ends FAILED with kind SCHEDULE_TIMEOUT and Explain's reason as
// its error; the sweep loop checks every tick after the reconnect grace.
//
// Locality (locality.go): hosts report the largest blobs their cache holds or is fetching
// with their status and within 100ms of a change; the server adds the inputs of each task
// the moment it places it on a host, and the outputs it collects there. The dispatcher
// prefers a free slot on the host holding a task's inputs (a new input: the host caching
// the fewest blobs), and lets free slots elsewhere go while that host keeps launching,
// up to Config.LocalityDelay or the time the other host would take to fetch the inputs
// (delay scheduling), never for more than 20 delays after the first slot it let go.
// Pipelines (pipelines.go, logic in sched/pipeline): a task with input_tasks
// is WAITING until its upstreams succeed, then QUEUED with their output blobs as inputs,
// or FAILED naming the upstream; SubmitPipeline stores a DAG of named stages at once.
// TestLocalityPlacement, TestPipelineSameHost and BenchmarkLocality/PipelineHandoff run
// two hosts with the real host cache (hostd/cache) over the cluster port:
//
//	go test -run 'Pipeline|Locality' ./sched/
//	go test -run '^$' -bench 'Locality|PipelineHandoff' -benchtime 1x ./sched/
//
// Tests: unit tests run against a real SQLite file with in-process agents; the
// integration tests (real_test.go) build the test agent (sched/internal/testagent) and
// the test handler (plugins/handlers/testhandler) and run the server as a subprocess
// (sched/internal/testserver) when they kill it:
//
//	CGO_ENABLED=0 go test -count=1 ./sched/...
//	CGO_ENABLED=0 go test -run '^$' -bench . ./sched     # tasks/s end to end, latency p50/p99
//
// Ordered streams (streamapi.go, transient.go; the logic and the Go client in package
// sched/stream): TaskService.Stream runs tasks of one type with a window W: the server
// reads no item past W outstanding and sends results in submission order, each once. A
// durable stream stores its items as tasks (CreateBatch) and watches them; a transient
// one keeps them in memory (transients), the dispatcher leases them before the store's
// tasks of the type, reports of transient:… task ids go to reportTransient, and a lost
// agent's transient tasks are resent at once. A transient task costs no store call and
// no goroutine of its own: its acks and reports are applied in the agent session's
// receive loop, a batch under one lock (agentbatch.go). Every hop carries several items
// a message, and nothing waits to fill one (a lone item goes at once; what queued while
// a message was being sent goes together in the next): the client sends StreamItems
// (1..W items; the server says it takes them with StreamOpened.batch_items, and the
// reader takes one window credit per item, so a batch never passes W); the dispatcher
// gives each agent it picks several transient tasks at once (its free slots, an even
// share of the queue) as one ServerBatch, to agents that list the "batch" capability,
// which answer with AgentBatch messages; results released together go to a client that
// asked (StreamOpen.batch_results) as one StreamResults. The agent index is filed once
// per such batch (agent.holdIndexing), not once per item. An agent's slots do not wait
// a round trip for the next item: once no agent has a free slot, transient items go
// ahead to agents that list the "queue-ahead" capability (Assign.may_queue; at most
// the type's slots ahead per agent, in even shares; agentIndex's ahead set finds them),
// which start each as a slot frees; such items count against the type's slots but not
// the agent's total, and one comes off with each release of the type (typeSlot.ahead).
// A report batch's freed slots are filled in the receive loop that applied it, the
// assigns going out with the report acks. BenchmarkStream reports
// items/s and CPU per item beside the raw plugin call's (PADDOCK_AGENT_CPUPROFILE
// profiles the agent process). TestStreamRealAgents (3 real agent processes, one
// killed; PADDOCK_STREAM_N=100000 for the full run), TestStreamClientStopsReading,
// TestStreamBadOpen, TestStreamBatchedItems (batches and single items mixed, an old-style
// client beside), TestStreamBadBatch, TestTransientAhead, BenchmarkStream.
//
// Online vs batch (preempt.go): Ready returns online tasks first; online tasks waiting
// with every slot of their type taken preempt batch tasks (store.Update.Preempted: not
// charged; cancel kind PREEMPTED), and Config.OnlineSLA feeds paddock_online_starts_total.
// The slot goes to the online task at once: it is leased to the preempted task's agent
// in the same store write as the preemption (store.UpdateLease: one commit, and no
// lease unless the preemption applied) and its Assign, naming the preempted task
// (replaces_task_id), follows the cancel (agents with the "preempt-handover" capability;
// for others the slot stays booked until a heartbeat shows the preempted task stopped).
// TestPreemptOnlineTakesBatchSlot, TestPreemptHandsOverWithoutHeartbeat,
// TestHandOverLeasesWithThePreemption, BenchmarkOnlineStart.
//
// Leasing at submit (submitlease.go): a task submitted while an agent has a free slot
// for it and nothing of its type waits is stored already leased (store.CreateLease: the
// submit's one commit) and its Assign sent when that commit returns, without a dispatch
// round; tasks with input blobs, upstreams or not_before, and tenants with weights or
// limits, go through the queue. TestSubmitLeasesAtOnce.
//
// Many agents (agentindex.go): the registry keeps, per task type, the agents that may
// take a task now (connected, a free slot of the type and of their total, under
// MaxUnacked and max tasks per VM), grouped by pending count, with the sum of their free
// slots. A dispatch round reads the free slots per type from it, and pick draws two of
// the least pending from it (tasks with requirements read only the available agents),
// so a round costs the same with 10 agents as with 1,000. A round pays nothing for what
// is not in use: transient queues are read only when one holds a task, locality waits
// once a round. A heartbeat wakes the dispatcher only when the agent can take more, and
// any message proves an agent alive without the agent registry's lock (session.seen).
// What a task costs per agent message is kept down: a round's assigns go to each agent
// as one ServerBatch (roundSends); an agent serving a single type is sent no
// QueueStatus after its heartbeats (its allocator gives that type every slot whatever
// the figures). TestPick and TestAgentIndex test placement and the index,
// TestRoundSends the grouping; BenchmarkManyAgents compares the dispatch rate (and CPU
// per task) with 1,000 agents to that with 10:
//
//	go test -run '^$' -bench ManyAgents -benchtime 1x -timeout 60m ./sched
//
// Liveness (vouch.go). An agent silent for AgentTimeout (5 heartbeats) loses its
// session, unless it is a guest relayed by a host that vouches for it: the host's
// Status lists the guest, not stopping, with a CPU time that rose within three of the
// host's statistics intervals (hostRegistry.vouched). Such an agent, starved of CPU
// rather than dead, keeps its session and the sweep renews its leases, for up to
// VouchedTimeout (server.vouched_timeout). When the host does not vouch, the log says
// why (hostRegistry.vouch: no control stream, its status too old, the guest not listed,
// its CPU time not risen recently). A heartbeat renews the leases of the tasks it lists
// and also those of Assigns sent on the agent's current session that it has neither
// acknowledged nor listed (unackedDue): a starved guest's heartbeat can go out before
// its agent has read an Assign, and such a lease lapsed one TTL after it was granted.
// TestHostVouchesForStarvedGuest, TestHostVouched, TestHeartbeatRenewsUnreadAssign, and
// with a real guest starved by libvirt's CPU quota internal/e2e
// TestStarvedGuestKeepsItsTask and TestStarvedGuestStartsItsTask.
//
// Deferred starts (starts.go). An agent's ack of a batch task is not written at once:
// startLoop writes the start (leased → running, at the ack's time) startDelay later if
// the task is still running, and a report that comes first carries the start into the
// task's final write. A short task costs three store writes instead of four. Online
// tasks' starts are written at once. A report of a task whose start is neither pending
// here nor stored (acknowledged on another replica, or before a restart) records its end
// less its wall time. TestDeferredStart, TestReportedStart.
//
// State and locks. The server's in-memory state is split by entity, each part with its
// own lock:
//
//   - the agent registry (agentreg.go, Server.agents): the agents, the agent index,
//     the agent-port connections bound to sessions, and the dispatcher's locality
//     waits (localWait, passedOver: pickNear reads and writes them while it picks an
//     agent, so they share the agents' lock);
//   - the host registry (hostreg.go, Server.hosts): the host daemons' records (pools,
//     guests, load, the blobs their caches hold), the backlog last sent to them, the
//     Collects waiting for an answer and when tasks staged by their host were placed;
//     code outside hostreg.go reaches them only through its methods;
//   - transients.mu (transient.go), streams.mu (streamapi.go), waitMu (the Wait
//     callers), readyMu (the ready hints), the queue meter's lock and tenantCount's.
//
// Lock order: the agent registry's lock, then transients.mu, then the host registry's
// lock; never the reverse (the host registry's methods call nothing else, so a host
// message never waits for the agents, and a task event for a guest's host is queued
// under the agent registry's lock, which keeps it in order with the host's
// TaskSnapshot). waitMu, readyMu, streams.mu, the queue meter's lock and the open
// Wait calls' count (tenantCount) are leaves: nothing else is taken while one is held.
// No lock is held while calling the store, and none while blocking on a send: an agent
// session's send and a host link's send queue the message and never block.
// HoldRegistry (tests) holds both registries' locks, as a stalled server would.
package sched
