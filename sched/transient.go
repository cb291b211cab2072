package sched

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Transient tasks: the items of transient streams. They live in the server's memory
// only, never in the store, and run through the same agent slots as stored tasks: the
// dispatcher leases them before the store's tasks of their type (dispatchTransient),
// the agent acks and reports them as any task, and the report path hands their results
// to their stream (reportTransient). A transient task whose agent is lost (its session
// ended: killed, unreachable, silent past the agent timeout) is queued again at once
// and resent to another agent under a new lease; a late report under the old lease is
// refused as superseded, so each item's result is taken exactly once.

// transientPrefix starts every transient task id: "transient:<stream id>:<seq>".
const transientPrefix = "transient:"

// transTask is one transient task. transients.mu guards its fields.
type transTask struct {
	id      string
	run     *streamRun
	seq     uint64
	payload []byte
	readyAt time.Time // when it was last queued
	attempt int
	// The current lease: agent "" while queued.
	agent   string
	leaseID uint64
	secret  string
}

// transients holds the transient tasks. mu guards the fields below; when both are held,
// the agent registry's lock (Server.agents.mu) is taken first.
type transients struct {
	mu    sync.Mutex
	queue map[string][]*transTask // ready, by type, in dispatch order
	live  map[string]*transTask   // every task not yet delivered, by id
}

func newTransients() *transients {
	return &transients{queue: map[string][]*transTask{}, live: map[string]*transTask{}}
}

// push queues items seqs (with their payloads) of run and wakes the dispatcher.
func (tr *transients) push(s *Server, run *streamRun, seqs []uint64, payloads [][]byte) {
	now := time.Now()
	tr.mu.Lock()
	for i, seq := range seqs {
		t := &transTask{id: transientPrefix + run.id + ":" + strconv.FormatUint(seq, 10), run: run, seq: seq, payload: payloads[i], readyAt: now}
		tr.live[t.id] = t
		tr.queue[run.typ] = append(tr.queue[run.typ], t)
	}
	tr.mu.Unlock()
	s.wake() // dispatchOnce sends transient tasks of every type with a free slot: no store hint
}

// get returns the live transient task id, or nil.
func (tr *transients) get(id string) *transTask {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.live[id]
}

// dropStream forgets the tasks of an ended stream: queued ones are not run; running
// ones finish on their agents and their reports are acknowledged as duplicates.
func (tr *transients) dropStream(s *Server, run *streamRun) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	q := tr.queue[run.typ][:0]
	for _, t := range tr.queue[run.typ] {
		if t.run != run {
			q = append(q, t)
		}
	}
	tr.queue[run.typ] = q
	for id, t := range tr.live {
		if t.run == run {
			delete(tr.live, id)
		}
	}
}

// dispatchTransient leases queued transient tasks of typ to agents with free slots and
// returns the assignments to send: to an agent that takes batches, those of one pick as
// few ServerBatch messages. Each pick gives the agent drawn several tasks at once (its
// free slots, at most an even share of the tasks queued among the agents that may take
// them), its index entry filed once for them. Caller holds s.agents.mu.
func (s *Server) dispatchTransient(typ string, now time.Time) []transSend {
	tr := s.trans
	tr.mu.Lock()
	defer tr.mu.Unlock()
	q := tr.queue[typ]
	var sends []transSend
	var held []*transTask // tasks of tenants at their max_running: stay queued, in order
	running := s.tenantRunning(q)
	probe := store.Task{Type: typ}
	// give leases up to k tasks of the queue to a, ahead of its free slots when ahead.
	give := func(a *agent, k int, ahead bool) {
		a.holdIndexing()
		var sb serverBatcher
		took := 0
		for took < k && len(q) > 0 {
			t := q[0]
			q = q[1:]
			tmpl := &t.run.tmpl
			if running != nil {
				if l := s.cfg.Tenants.Of(tmpl.Tenant); l.MaxRunning > 0 && running[tmpl.Tenant] >= l.MaxRunning {
					held = append(held, t)
					continue
				}
				running[tmpl.Tenant]++
			}
			took++
			m := s.leaseTransient(a, t, now, ahead)
			if !a.sess.batch {
				sends = append(sends, transSend{a.sess, m})
				continue
			}
			if !sb.add(m) {
				sends = append(sends, transSend{a.sess, sb.take()})
				sb.add(m)
			}
		}
		if m := sb.take(); m != nil {
			sends = append(sends, transSend{a.sess, m})
		}
		a.releaseIndexing()
	}
	for len(q) > 0 {
		a := s.pick(&probe)
		if a == nil || a.sess == nil {
			break
		}
		give(a, s.transientShare(a, typ, len(q)), false)
	}
	if len(q) > 0 { // every slot taken: queue some on the agents that take them
		cands := s.aheadAgents(typ)
		for i, c := range cands {
			// An even share of what is left among the agents left, within each one's room.
			give(c.a, min(c.room, (len(q)+len(cands)-i-1)/(len(cands)-i)), true)
		}
	}
	if len(held) > 0 {
		q = append(held, q...)
	}
	if len(q) == 0 {
		delete(tr.queue, typ)
	} else {
		tr.queue[typ] = q
	}
	return sends
}

// aheadAgents returns the agents that may queue more transient tasks of typ ahead of
// their free slots (agentv1.CapQueueAhead), with how many more each may queue. An agent
// holds at most its slots of typ queued (so that each queued task starts within one
// task's run), and queues only once its slots of typ are all taken: an agent with a free
// slot is given tasks by pick first. Other agents are not starved: tasks go ahead only
// when no agent has a free slot for them, in even shares, and each queued task is
// resent elsewhere if its agent is lost, as a running one is. Caller holds s.agents.mu.
func (s *Server) aheadAgents(typ string) []aheadRoom {
	ti := s.agents.index.types[typ]
	if ti == nil {
		return nil
	}
	var out []aheadRoom
	for a := range ti.ahead { // the agents filed with room (agentindex.go), checked again
		if room := a.aheadRoom(typ); room > 0 {
			out = append(out, aheadRoom{a, room})
		}
	}
	return out
}

// aheadRoom is how many more tasks of typ a may queue ahead of its free slots: none
// unless it takes them (queue-ahead) and every slot of typ it has is taken; at most its
// slots of typ queued, within MaxUnacked and its max tasks. Caller holds s.agents.mu.
func (a *agent) aheadRoom(typ string) int {
	if a.sess == nil || !a.sess.queueAhead || !a.takesWork() {
		return 0
	}
	ts := a.types[typ]
	if ts == nil || ts.running < ts.slots {
		return 0
	}
	room := min(ts.slots-ts.ahead, MaxUnacked-a.unacked)
	if a.maxTasks > 0 {
		room = min(room, a.maxTasks-a.assigned)
	}
	return max(room, 0)
}

// aheadRoom is an agent that may queue room more transient tasks of a type.
type aheadRoom struct {
	a    *agent
	room int
}

// transientShare is how many of the queued transient tasks of typ (queued of them)
// agent a, just picked, takes at once: its free slots, within its max tasks and
// MaxUnacked, and no more than an even share of them among the agents that may take
// tasks of typ (so that a short queue is spread over them); at least 1. Caller holds
// s.agents.mu.
func (s *Server) transientShare(a *agent, typ string, queued int) int {
	k := a.available(typ)
	if a.maxTasks > 0 {
		k = min(k, a.maxTasks-a.assigned)
	}
	k = min(k, MaxUnacked-a.unacked)
	if n := s.agents.index.agentsFor(typ); n > 1 {
		k = min(k, (min(queued, s.agents.index.types[typ].free)+n-1)/n)
	}
	return max(k, 1)
}

// leaseTransient leases transient task t to a under a new lease and returns its
// assignment; ahead: sent ahead of a's free slots of its type, for a's queue (the task
// may wait there for a slot up to about one task's run: its deadline on the server is
// twice its timeout, and the agent times its run from its start). Caller holds
// s.agents.mu and s.trans.mu.
func (s *Server) leaseTransient(a *agent, t *transTask, now time.Time, ahead bool) *agentv1.ServerMessage {
	tmpl := &t.run.tmpl
	t.attempt++
	t.leaseID++
	t.agent, t.secret = a.id, newSecret()
	as := a.book(t.id, t.run.typ, tmpl.Class, tmpl.Tenant)
	as.leaseID, as.secret = t.leaseID, t.secret
	if ahead {
		a.types[t.run.typ].ahead++
		a.ahead++
	}
	s.guestTaskEvent(a, t.id, t.leaseID, hostv1.TaskEvent_KIND_STARTED, nil)
	var maxOut, deadline int64
	path := s.dataPath(a)
	if path != agentv1.DataPath_DATA_PATH_UNSPECIFIED {
		maxOut = s.cfg.MaxOutputBytes
	}
	var timeout int64     // for the agent's queue: its run's timeout from its start
	if tmpl.Timeout > 0 { // the agent stops the handler then; the sweep ends it if the agent does not (expireTransients)
		as.deadline = now.Add(tmpl.Timeout)
		if ahead {
			as.deadline = now.Add(2 * tmpl.Timeout)
			timeout = tmpl.Timeout.Milliseconds()
		}
		deadline = as.deadline.UnixMilli()
	}
	return &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: &agentv1.Assign{
		TaskId: t.id, LeaseId: t.leaseID, Type: t.run.typ, Payload: t.payload, Attempt: uint32(t.attempt), DeadlineUnixMs: deadline,
		LeaseExpiresUnixMs: now.Add(s.cfg.LeaseTTL).UnixMilli(), DataPath: path, MaxOutputBytes: maxOut, LeaseSecret: t.secret,
		MayQueue: ahead, TimeoutMs: timeout,
	}}}
}

// tenantRunning counts the leased and running tasks of each tenant when one of the
// tenants of the queued transient tasks q has a max_running; nil otherwise (nothing to
// check). Caller holds s.agents.mu.
func (s *Server) tenantRunning(q []*transTask) map[string]int {
	if len(s.cfg.Tenants) == 0 {
		return nil
	}
	limited := false
	for _, t := range q {
		if s.cfg.Tenants.Of(t.run.tmpl.Tenant).MaxRunning > 0 {
			limited = true
			break
		}
	}
	if !limited {
		return nil
	}
	return s.runningByTenant()
}

// lostTransient handles transient task t whose attempt ended without a result (its
// agent's session ended, it refused the task, or the task ran past its timeout): with
// attempts left it is queued again (first in its queue when front), else it ends dead
// and the result to deliver is returned. Caller holds tr.mu.
func (tr *transients) lostTransient(t *transTask, now time.Time, front bool, kind paddockv1.FailureKind, why string) *paddockv1.StreamResult {
	t.agent, t.readyAt = "", now
	if t.attempt >= t.run.tmpl.MaxAttempts {
		delete(tr.live, t.id)
		return &paddockv1.StreamResult{Seq: t.seq, TaskId: t.id, Attempts: int32(t.attempt), State: paddockv1.State_STATE_DEAD, FailureKind: kind,
			Error: fmt.Sprintf("%s (attempt %d of %d)", why, t.attempt, t.run.tmpl.MaxAttempts)}
	}
	if front {
		tr.queue[t.run.typ] = append([]*transTask{t}, tr.queue[t.run.typ]...)
	} else {
		tr.queue[t.run.typ] = append(tr.queue[t.run.typ], t)
	}
	return nil
}

// expireTransients ends the transient tasks running past their timeout plus the grace
// whose agents have not reported them (an agent that does not stop them): each is
// cancelled on its agent and queued again or, out of attempts, ends dead. Durable tasks
// get the same from their lease, which is not renewed past the deadline. Caller holds
// s.agents.mu.
func (s *Server) expireTransients(now time.Time) {
	tr := s.trans
	tr.mu.Lock()
	if len(tr.live) == 0 {
		tr.mu.Unlock()
		return
	}
	type late struct {
		sess    *session
		id      string
		leaseID uint64
	}
	var cancels []late
	var dead []deliverableTo
	for _, a := range s.agents.byID {
		for id, as := range a.running {
			if as.deadline.IsZero() || !now.After(as.deadline.Add(s.cfg.TimeoutGrace)) || !strings.HasPrefix(id, transientPrefix) {
				continue
			}
			t := tr.live[id]
			a.release(id, as.leaseID)
			if t == nil || t.agent != a.id || t.leaseID != as.leaseID {
				continue
			}
			s.guestTaskEvent(a, id, t.leaseID, hostv1.TaskEvent_KIND_FINISHED, nil)
			cancels = append(cancels, late{a.sess, id, as.leaseID})
			why := fmt.Sprintf("ran past its timeout of %v on agent %s, which did not stop it", t.run.tmpl.Timeout, a.id)
			if r := tr.lostTransient(t, now, true, paddockv1.FailureKind_FAILURE_KIND_TIMEOUT, why); r != nil {
				dead = append(dead, deliverableTo{t.run, r})
			}
			s.metrics.leaseExpiries.Inc()
		}
	}
	tr.mu.Unlock()
	for _, d := range dead {
		d.run.deliver(d.res.GetSeq(), d.res)
	}
	for _, c := range cancels {
		if c.sess != nil {
			c.sess.send(cancelMsg(c.id, c.leaseID, agentv1.CancelKind_CANCEL_KIND_CLIENT, "past its timeout"))
		}
	}
	if len(cancels) > 0 {
		s.wake()
	}
}

// deliverableTo is a result to deliver to a stream.
type deliverableTo struct {
	run *streamRun
	res *paddockv1.StreamResult
}

type transSend struct {
	sess *session
	msg  *agentv1.ServerMessage
}

// requeueTransient queues again the transient tasks a was assigned on session se, which
// ended: they go to the front of their type's queue, each under a new lease when next
// dispatched. Caller holds s.agents.mu.
func (s *Server) requeueTransient(a *agent, se *session) {
	tr := s.trans
	tr.mu.Lock()
	requeued := false
	var dead []deliverableTo
	for id, as := range a.running {
		if as.sess != se {
			continue
		}
		t := tr.live[id]
		if t == nil || t.agent != a.id || t.leaseID != as.leaseID {
			if strings.HasPrefix(id, transientPrefix) {
				a.release(id, 0) // its stream ended
			}
			continue
		}
		a.release(id, 0)
		s.guestTaskEvent(a, id, t.leaseID, hostv1.TaskEvent_KIND_FINISHED, nil)
		why := fmt.Sprintf("agent %s was lost while it ran the task", a.id)
		if r := tr.lostTransient(t, time.Now(), true, paddockv1.FailureKind_FAILURE_KIND_LEASE_EXPIRED, why); r != nil {
			dead = append(dead, deliverableTo{t.run, r})
		}
		requeued = true
		s.metrics.leaseExpiries.Inc()
	}
	tr.mu.Unlock()
	for _, d := range dead { // a task that kills every agent it runs on ends dead
		d.run.deliver(d.res.GetSeq(), d.res)
	}
	if requeued {
		s.wake()
	}
}

// reportTransient applies a report of a transient task: the stream gets the result of
// a success or a final failure; a retryable failure queues the task again.
func (s *Server) reportTransient(agentID string, r *agentv1.Report) *agentv1.ReportAck {
	return s.reportTransients(agentID, []*agentv1.Report{r})[0]
}

// doneTrans is a transient task whose report was accepted.
type doneTrans struct {
	t       *transTask
	leaseID uint64
	res     *paddockv1.StreamResult // nil: queued again
}

// reportTransients applies reports of transient tasks from agentID, as reportTransient
// each, taking the locks once for all of them; it returns their acks in order.
func (s *Server) reportTransients(agentID string, reps []*agentv1.Report) []*agentv1.ReportAck {
	acks := make([]*agentv1.ReportAck, len(reps))
	done := make([]doneTrans, 0, len(reps))
	now := time.Now()
	tr := s.trans
	tr.mu.Lock()
	for i, r := range reps {
		ack := &agentv1.ReportAck{TaskId: r.GetTaskId(), LeaseId: r.GetLeaseId()}
		acks[i] = ack
		d, outcome, why := tr.applyReport(agentID, r, now)
		ack.Outcome, ack.Error = outcome, why
		if outcome == agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
			done = append(done, d)
		}
	}
	tr.mu.Unlock()
	if len(done) == 0 {
		return acks
	}
	s.agents.mu.Lock()
	if a := s.agents.byID[agentID]; a != nil {
		a.holdIndexing() // filed once for the batch
		for _, d := range done {
			if a.release(d.t.id, d.leaseID) {
				s.guestTaskEvent(a, d.t.id, d.leaseID, hostv1.TaskEvent_KIND_FINISHED, nil)
			}
		}
		a.releaseIndexing()
	}
	s.agents.mu.Unlock()
	// Deliver each stream's results under one lock (usually one stream).
	for i := 0; i < len(done); {
		run, j := done[i].t.run, i
		var rs []deliverable
		for ; j < len(done) && done[j].t.run == run; j++ {
			if done[j].res != nil {
				rs = append(rs, deliverable{done[j].t.seq, done[j].res})
			}
		}
		run.deliverAll(rs)
		i = j
	}
	s.wake()
	s.metrics.reports.WithLabelValues("accepted").Add(float64(len(done)))
	return acks
}

// applyReport checks report r of a transient task from agentID against its current
// lease and applies it: the result to deliver, or the task queued again for a retry.
// It returns the outcome and, when refused, why. Caller holds tr.mu.
func (tr *transients) applyReport(agentID string, r *agentv1.Report, now time.Time) (doneTrans, agentv1.ReportOutcome, string) {
	t := tr.live[r.GetTaskId()]
	switch {
	case t == nil:
		return doneTrans{}, agentv1.ReportOutcome_REPORT_OUTCOME_DUPLICATE, fmt.Sprintf("transient task %s already delivered (or its stream ended); nothing changed", r.GetTaskId())
	case t.agent != agentID || t.leaseID != r.GetLeaseId():
		return doneTrans{}, agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED, fmt.Sprintf("lease %d of transient task %s is not its current lease of this agent; drop it", r.GetLeaseId(), t.id)
	case !secretOK(t.secret, r.GetLeaseSecret()):
		return doneTrans{}, agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, fmt.Sprintf("lease %d of transient task %s: lease_secret missing or wrong", r.GetLeaseId(), t.id)
	}
	res := &paddockv1.StreamResult{Seq: t.seq, TaskId: t.id, Attempts: int32(t.attempt)}
	retry := false
	switch r.GetStatus() {
	case agentv1.Status_STATUS_SUCCEEDED:
		if !sha256OK(r.GetOutput(), r.GetSha256()) {
			res.State, res.FailureKind, res.Error = paddockv1.State_STATE_FAILED, paddockv1.FailureKind_FAILURE_KIND_BAD_OUTPUT, "output sha256 mismatch"
			retry = true
		} else {
			res.State, res.Output = paddockv1.State_STATE_SUCCEEDED, r.GetOutput()
		}
	case agentv1.Status_STATUS_FAILED, agentv1.Status_STATUS_CANCELLED:
		res.State, res.FailureKind, res.Error = paddockv1.State_STATE_FAILED, kindProto(reportKind(r)), r.GetError()
		retry = r.GetRetryable() || r.GetStatus() == agentv1.Status_STATUS_CANCELLED
	default:
		return doneTrans{}, agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, fmt.Sprintf("report: status %v is not a valid outcome", r.GetStatus())
	}
	if retry && t.attempt >= t.run.tmpl.MaxAttempts {
		res.State, retry = paddockv1.State_STATE_DEAD, false
	}
	t.agent, t.readyAt = "", now
	if retry {
		tr.queue[t.run.typ] = append(tr.queue[t.run.typ], t)
		res = nil
	} else {
		delete(tr.live, t.id)
	}
	return doneTrans{t: t, leaseID: r.GetLeaseId(), res: res}, agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED, ""
}

// sha256OK reports whether want (hex, any case) is the sha256 of b.
func sha256OK(b []byte, want string) bool {
	sum := sha256.Sum256(b)
	var got [2 * sha256.Size]byte
	hex.Encode(got[:], sum[:])
	return len(want) == len(got) && strings.EqualFold(string(got[:]), want)
}

// ackTransient records an agent's ack of a transient task (its lease and secret checked
// in memory). A refused assignment is queued again at once.
func (s *Server) ackTransient(a *agent, ack *agentv1.Ack) {
	s.ackTransients(a, []*agentv1.Ack{ack})
}

// ackTransients records acks of transient tasks from a, as ackTransient each, under one
// lock.
func (s *Server) ackTransients(a *agent, acks []*agentv1.Ack) {
	requeued := false
	var dead []deliverableTo
	now := time.Now()
	s.agents.mu.Lock()
	a.holdIndexing() // filed once for the batch
	tr := s.trans
	tr.mu.Lock()
	for _, ack := range acks {
		as := a.running[ack.GetTaskId()]
		if as == nil || as.leaseID != ack.GetLeaseId() || !secretOK(as.secret, ack.GetLeaseSecret()) {
			continue
		}
		a.acked(as)
		if ack.GetAccepted() {
			continue
		}
		t := tr.live[as.taskID]
		a.release(as.taskID, as.leaseID)
		if t != nil && t.agent == a.id && t.leaseID == as.leaseID {
			why := fmt.Sprintf("agent %s refused the task: %s", a.id, ack.GetError())
			if r := tr.lostTransient(t, now, false, paddockv1.FailureKind_FAILURE_KIND_REFUSED, why); r != nil {
				dead = append(dead, deliverableTo{t.run, r})
			}
		}
		requeued = true
	}
	tr.mu.Unlock()
	a.releaseIndexing()
	s.agents.mu.Unlock()
	for _, d := range dead {
		d.run.deliver(d.res.GetSeq(), d.res)
	}
	if requeued {
		s.wake()
	}
}

// sendTransients leases the queued transient tasks of every type that has any (to free
// slots, or ahead: dispatchTransient), under one hold of the registry, and sends their
// assignments. It returns how many tasks of each type it leased (tasks, not messages: a
// ServerBatch carries several).
func (s *Server) sendTransients(now time.Time) map[string]int {
	if !s.trans.queued() {
		return nil
	}
	types := s.trans.queuedTypes()
	n := make(map[string]int, len(types))
	var sends []transSend
	s.agents.mu.Lock()
	for _, typ := range types {
		ss := s.dispatchTransient(typ, now)
		for _, sd := range ss {
			n[typ] += assignsIn(sd.msg)
		}
		sends = append(sends, ss...)
	}
	s.agents.mu.Unlock()
	for _, sd := range sends {
		sd.sess.send(sd.msg)
	}
	return n
}

// assignsIn is how many assignments m carries.
func assignsIn(m *agentv1.ServerMessage) int {
	if m.GetAssign() != nil {
		return 1
	}
	return len(m.GetBatch().GetAssigns())
}

// queuedTypes returns the types of which transient tasks are queued.
func (tr *transients) queuedTypes() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]string, 0, len(tr.queue))
	for typ := range tr.queue {
		out = append(out, typ)
	}
	return out
}

// ready returns how many transient tasks of typ are queued and when the oldest was.
func (tr *transients) ready(typ string) (int, time.Time) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	q := tr.queue[typ]
	if len(q) == 0 {
		return 0, time.Time{}
	}
	oldest := q[0].readyAt
	for _, t := range q {
		if t.readyAt.Before(oldest) {
			oldest = t.readyAt
		}
	}
	return len(q), oldest
}
