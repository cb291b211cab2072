package sched

import (
	"sort"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Agent states as operators see them.
const (
	agentConnected = "connected"
	agentLost      = "lost"
)

// agent is the server's view of one agent. The agent registry's lock
// (agentRegistry.mu, Server.agents.mu) guards every field.
type agent struct {
	id, host, version string
	state             string
	types             map[string]*typeSlot
	// total is how many tasks of all types the agent runs at once (Register.total_slots;
	// 0: no total beyond the types' slots). Dispatch never leases it more than total.
	total         int
	capacity      store.Requirements // what it offers (CPU, memory, labels)
	load          *agentv1.Load
	connectedAt   time.Time
	lastHeartbeat time.Time
	lostAt        time.Time
	sess          *session               // nil once lost
	running       map[string]*assignment // by task id: assigned and not yet reported
	unacked       int                    // assignments in running not yet acknowledged
	// ahead is the sum of the types' ahead: tasks in running that wait in the agent's
	// queue for a slot (transient items sent ahead: transient.go), not counted against
	// total.
	ahead int

	// A guest's agent, relayed by its host: hostID and pool as the host attested them
	// (empty for agents on the agent port). maxTasks > 0 stops assignments once
	// assigned reaches it (the pool's max_tasks_per_vm); gone: its host reported it gone.
	hostID, pool       string
	maxTasks, assigned int
	gone               bool
	// vouchedSince: since when its host has vouched for its silent guest (vouch.go;
	// zero: not silent, or not vouched).
	vouchedSince time.Time

	// index is the index a is filed in (nil: none); idx, its entries by type
	// (agentindex.go).
	index *agentIndex
	idx   map[string]*indexEntry
	// aheadIn: the types in whose ahead set a is filed (agentindex.go).
	aheadIn map[string]bool
	// holdIndex defers reindex until releaseIndex (a batch of changes filed once);
	// staleIndex records that a change was deferred (agentindex.go).
	holdIndex, staleIndex bool
}

// typeSlot is one type an agent serves. slots is the type's current limit from the
// agent's concurrency allocator (sent in Register and every Heartbeat); the server
// dispatches the type to the agent only while running < slots. running is the
// server's count (leases not yet reported), which is never below the agent's own.
type typeSlot struct {
	version string
	slots   int
	running int
	// ahead is how many of running were sent ahead of the type's free slots
	// (Assign.may_queue) and, as far as the server knows, still wait in the agent's
	// queue: each release of a task of the type (a slot freed, which starts the next
	// queued task, or a queued task ended) takes one off.
	ahead int
	// As the agent reported them, for operators: the type's minimum, its tolerable
	// delay, the queuing delay its allocator used, and the agent's own running count.
	min          int
	tolerable    time.Duration
	delay        time.Duration
	agentRunning int
}

// assignment is one lease held by an agent.
type assignment struct {
	taskID   string
	leaseID  uint64
	secret   string   // the lease's secret (Assign.lease_secret)
	acked    bool     // the agent acknowledged it (or listed it as running)
	sess     *session // the session it was assigned on
	typ      string
	class    store.Class // online or batch (batch ones may be preempted: preempt.go)
	tenant   string      // the task's tenant (fair sharing, max_running)
	deadline time.Time   // past this (plus grace) heartbeats stop renewing the lease; zero: none
	// renewedUntil is the lease's expiry as this server last wrote it (zero: unknown, so
	// the next heartbeat renews it). Heartbeats renew a lease only once less than half
	// of LeaseTTL (and less than three heartbeats) is left, not on every beat: with many
	// agents, a store write per agent per heartbeat cost more than the tasks.
	renewedUntil time.Time
	// Replicas (replica.go): cancelSent, a client cancel was sent to the agent;
	// staleSince, when syncOnce first found the lease gone from the store.
	cancelSent bool
	staleSince time.Time
	// leased is the task as its lease left it in the store (without its payload and
	// inputs), set when this server granted the lease: a success report under this
	// lease is applied from it without reading the task again (reportedTask). Nil for an
	// assignment learnt another way (an agent's resync after a reconnect).
	leased *store.Task
	// startedAt is when the agent acknowledged the task, while that start is not yet
	// written to the store (deferred: starts.go); zero once written or when not deferred.
	startedAt time.Time
}

func (a *agent) pending() int { return len(a.running) }

// lastSeen is when a last sent anything: its last heartbeat, or a later message on
// its current session. Caller holds s.agents.mu.
func (a *agent) lastSeen() time.Time {
	t := a.lastHeartbeat
	if a.sess != nil {
		if n := a.sess.seen.Load(); n > t.UnixNano() {
			t = time.Unix(0, n)
		}
	}
	return t
}

// hasFreeTotal reports whether a runs fewer tasks than its total slots. A type's limit
// may drop below what it runs (the allocator moved slots to another type): the other
// type's new slots free up only as those tasks end, never past the total.
func (a *agent) hasFreeTotal() bool { return a.total <= 0 || a.pending()-a.ahead < a.total }

// free is how many more tasks of type typ a may take now.
func (a *agent) free(typ string) int {
	ts := a.types[typ]
	if ts == nil {
		return 0
	}
	f := ts.slots - ts.running
	if a.total > 0 {
		f = min(f, a.total-(a.pending()-a.ahead))
	}
	return max(f, 0)
}

// serves reports whether the agent can take a task now.
func (a *agent) fits(t *store.Task) bool {
	if a.state != agentConnected || a.gone || (a.maxTasks > 0 && a.assigned >= a.maxTasks) || a.unacked >= MaxUnacked {
		return false
	}
	ts := a.types[t.Type]
	if ts == nil || ts.running >= ts.slots || !a.hasFreeTotal() {
		return false
	}
	return a.unmet(t.Requirements) == ""
}

// unmet names the first of r that a does not offer ("" when it offers all of r):
// "cpu_millis", "memory_bytes" or "labels[key]".
func (a *agent) unmet(r store.Requirements) string {
	if r.CPUMillis > 0 && r.CPUMillis > a.capacity.CPUMillis {
		return "cpu_millis"
	}
	if r.MemoryBytes > 0 && r.MemoryBytes > a.capacity.MemoryBytes {
		return "memory_bytes"
	}
	first := ""
	for k, v := range r.Labels {
		if a.capacity.Labels[k] != v && (first == "" || k < first) {
			first = k
		}
	}
	if first != "" {
		return "labels[" + first + "]"
	}
	return ""
}

// pick chooses an agent for t among those that fit: least pending first; ties broken
// by the power of two random choices (two tied agents drawn at random, the one with the
// lower CPU load wins). It draws from the agent index (agentindex.go), so its cost does
// not grow with the number of agents. Caller holds s.agents.mu.
func (s *Server) pick(t *store.Task) *agent {
	return s.agents.index.pick(t)
}

func (a *agent) cpu() float64 {
	if a.load == nil {
		return 0
	}
	return a.load.GetCpuPercent()
}

// reserve books a slot of t's type on a for t's next lease. Caller holds s.agents.mu.
func (a *agent) reserve(taskID, typ string) {
	a.types[typ].running++
	a.running[taskID] = &assignment{taskID: taskID, typ: typ}
	a.unacked++
	a.reindex()
}

// book books a slot of typ on a for a new lease of task taskID (class and tenant: the
// task's), counted against a's max tasks, and returns its assignment. Every grant of a
// lease to an agent books its slot here (the dispatcher, a submit, a preemption's
// hand-over, a transient task); unbook undoes a booking whose lease was not granted.
// Caller holds s.agents.mu.
func (a *agent) book(taskID, typ string, class store.Class, tenant string) *assignment {
	a.reserve(taskID, typ)
	as := a.running[taskID]
	as.sess, as.class, as.tenant = a.sess, class, tenant
	a.assigned++
	a.reindex() // a guest may have reached its max tasks
	return as
}

// unbook frees the slot booked (book) for taskID, whose lease was not granted: it no
// longer counts against a's max tasks either. Caller holds s.agents.mu.
func (a *agent) unbook(taskID string) {
	a.release(taskID, 0)
	a.assigned--
	a.reindex()
}

// acked records that the agent acknowledged as. Caller holds s.agents.mu.
func (a *agent) acked(as *assignment) {
	if !as.acked {
		as.acked = true
		a.unacked--
		a.reindex()
	}
}

// recountAhead keeps each type's ahead within its running and a.ahead their sum, after
// the types were set again. Caller holds s.agents.mu.
func (a *agent) recountAhead() {
	a.ahead = 0
	for _, ts := range a.types {
		ts.ahead = min(ts.ahead, ts.running)
		a.ahead += ts.ahead
	}
}

// release frees the slot of taskID if a holds it under leaseID (0: any). Caller holds
// s.agents.mu.
func (a *agent) release(taskID string, leaseID uint64) bool {
	as := a.running[taskID]
	if as == nil || (leaseID != 0 && as.leaseID != 0 && as.leaseID != leaseID) {
		return false
	}
	delete(a.running, taskID)
	if !as.acked {
		a.unacked--
	}
	if ts := a.types[as.typ]; ts != nil && ts.running > 0 {
		ts.running--
		if ts.ahead > 0 {
			ts.ahead--
			a.ahead--
		}
	}
	a.reindex()
	return true
}

// releaseLease frees taskID's slot on whichever agent holds it under leaseID.
func (s *Server) releaseLease(agentID, taskID string, leaseID uint64) {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	if a := s.agents.byID[agentID]; a != nil && a.release(taskID, leaseID) {
		s.guestTaskEvent(a, taskID, leaseID, hostv1.TaskEvent_KIND_FINISHED, nil)
	}
}

// AgentInfo is what operators see of one agent.
type AgentInfo struct {
	ID, Host, Version, State string
	// Replica is the id of the server replica holding the agent's session (this one).
	Replica string
	Types   []AgentTypeInfo
	Running int
	// TotalSlots is the agent's total (its types' Slots add up to it); 0: none reported.
	TotalSlots    int
	Labels        map[string]string
	ConnectedAt   time.Time
	LastHeartbeat time.Time
}

// AgentTypeInfo is one type an agent serves: Slots is its current limit from the
// agent's allocator, Running the tasks of it the server has leased to the agent and
// not yet seen reported, MinSlots its guaranteed minimum, TolerableDelay how long it
// may queue, Delay the queuing delay the allocator used at its last rebalance.
type AgentTypeInfo struct {
	Name, Version            string
	Slots, Running, MinSlots int
	TolerableDelay, Delay    time.Duration
}

// Agents returns the agents the server knows, sorted by id.
func (s *Server) Agents() []AgentInfo {
	measured := map[string]time.Duration{}
	for _, qd := range s.QueueDelays() {
		measured[qd.Type] = qd.Delay
	}
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	var out []AgentInfo
	for _, a := range s.agents.byID {
		ai := AgentInfo{Replica: s.cfg.ReplicaID, ID: a.id, Host: a.host, Version: a.version, State: a.state, Running: a.pending(), TotalSlots: a.total,
			Labels: a.capacity.Labels, ConnectedAt: a.connectedAt, LastHeartbeat: a.lastSeen()}
		for n, ts := range a.types {
			d := ts.delay
			if len(a.types) == 1 { // its allocator is sent no queue status (queueStatus)
				d = max(d, measured[n])
			}
			ai.Types = append(ai.Types, AgentTypeInfo{Name: n, Version: ts.version, Slots: ts.slots, Running: ts.running,
				MinSlots: ts.min, TolerableDelay: ts.tolerable, Delay: d})
		}
		sort.Slice(ai.Types, func(i, j int) bool { return ai.Types[i].Name < ai.Types[j].Name })
		out = append(out, ai)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
