package sched

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// ProtocolVersion is the version of the agent protocol this server speaks.
const ProtocolVersion = 1

// Limits of what one agent may declare (Register, Heartbeat): a session exceeding one
// is refused with an error naming it.
const (
	// MaxAgentTypes bounds the task types one agent serves.
	MaxAgentTypes = 256
	// MaxTypeSlots bounds the slots of one type (TaskType.slots).
	MaxTypeSlots = 1024
	// MaxTotalSlots bounds Register.total_slots.
	MaxTotalSlots = 4096
	// MaxRunningReported bounds the running tasks an agent lists in a Register or
	// Heartbeat.
	MaxRunningReported = 2 * MaxTotalSlots
	// MaxUnacked bounds the assignments an agent has not acknowledged yet: past it the
	// dispatcher assigns it nothing until it acks.
	MaxUnacked = 256
)

// agentService implements agentv1.AgentServiceServer.
type agentService struct {
	agentv1.UnimplementedAgentServiceServer
	s *Server
}

var _ agentv1.AgentServiceServer = (*agentService)(nil)

// Describe implements agentv1.AgentServiceServer.
func (as *agentService) Describe(ctx context.Context, _ *agentv1.DescribeRequest) (*agentv1.DescribeResponse, error) {
	if err := as.s.checkAgentToken(ctx); err != nil {
		return nil, err
	}
	return &agentv1.DescribeResponse{ServerVersion: as.s.cfg.Version, ProtocolVersion: ProtocolVersion,
		Capabilities: []string{"cancel", "heartbeat-renew", "report-ack", "reconnect-running"}}, nil
}

// checkAgentToken checks the agent token (server.agent_token) of a TCP agent. A session
// relayed by a host daemon needs none: the host authenticated itself with its client
// certificate on the cluster port and vouches for the guest (its address is a GuestAddr,
// which only the relay path sets).
func (s *Server) checkAgentToken(ctx context.Context) error {
	if s.cfg.AgentToken == "" {
		return nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if _, relayed := p.Addr.(GuestAddr); relayed {
			return nil
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if constantTimeEqual(v, "Bearer "+s.cfg.AgentToken) {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "agent token missing or wrong: send metadata \"authorization: Bearer <server.agent_token>\"")
}

// session is one agent's open Session stream.
type session struct {
	id     string
	out    chan *agentv1.ServerMessage
	ctx    context.Context
	cancel context.CancelCauseFunc
	once   sync.Once
	// handover: the agent takes an Assign that replaces a preempted task
	// (agentv1.CapPreemptHandover; preempt.go).
	handover bool
	// batch: the agent takes ServerBatch messages (agentv1.CapBatch, agentbatch.go).
	batch bool
	// queueAhead: the agent queues transient items sent ahead of its free slots
	// (agentv1.CapQueueAhead, transient.go).
	queueAhead bool
	// seen is when the agent last sent anything on the session (Unix ns): set without
	// the server's lock on every message, read by the sweep (agent.lastSeen).
	seen atomic.Int64
}

func (se *session) send(m *agentv1.ServerMessage) {
	select {
	case se.out <- m:
	case <-se.ctx.Done():
	default:
		se.close(errors.New("the agent does not read its session fast enough (send buffer full)"))
	}
}

func (se *session) close(cause error) { se.once.Do(func() { se.cancel(cause) }) }

func (s *Server) closeSessions() {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	for _, a := range s.agents.byID {
		if a.sess != nil {
			a.sess.close(errors.New("server shutting down"))
		}
	}
}

// Session implements agentv1.AgentServiceServer.
func (as *agentService) Session(stream agentv1.AgentService_SessionServer) error {
	s := as.s
	if err := s.checkAgentToken(stream.Context()); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if err := validateRegister(reg); err != nil {
		s.metrics.refused.WithLabelValues("limits").Inc()
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var att *GuestAddr
	if p, ok := peer.FromContext(stream.Context()); ok {
		if ga, ok := p.Addr.(GuestAddr); ok {
			att = &ga
		}
	}
	if att != nil && reg.GetAgentId() != att.Guest {
		s.metrics.refused.WithLabelValues("identity").Inc()
		s.log.Warn("agent refused: it claims another identity than its host attests", "claimed", reg.GetAgentId(), "guest", att.Guest, "host", att.Host, "pool", att.Pool)
		return status.Errorf(codes.PermissionDenied, "register: agent_id %q is not this guest: host %s attests the session comes from guest %q (pool %s); a guest's agent must register under its guest name (paddock.id on the kernel command line)",
			reg.GetAgentId(), att.Host, att.Guest, att.Pool)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	var b [8]byte
	_, _ = rand.Read(b[:])
	se := &session{id: hex.EncodeToString(b[:]), out: make(chan *agentv1.ServerMessage, 8192), ctx: ctx, cancel: cancel,
		handover:   slices.Contains(reg.GetCapabilities(), agentv1.CapPreemptHandover),
		batch:      slices.Contains(reg.GetCapabilities(), agentv1.CapBatch),
		queueAhead: slices.Contains(reg.GetCapabilities(), agentv1.CapQueueAhead)}
	log := s.log.With("agent", reg.GetAgentId(), "session", se.id)
	a, err := s.register(reg, se, att)
	if err != nil {
		s.metrics.refused.WithLabelValues("identity").Inc()
		log.Warn("agent refused", "err", err)
		return status.Error(codes.PermissionDenied, err.Error())
	}
	log.Info("agent registered", "host", reg.GetHost(), "types", len(reg.GetTypes()), "running", len(reg.GetRunning()))
	defer s.lose(a, se, log)
	defer s.bindConn(stream.Context(), a.id)() // blob RPCs on this connection act for this agent

	if err := stream.Send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Registered{Registered: &agentv1.Registered{
		SessionId: se.id, HeartbeatIntervalMs: s.cfg.HeartbeatInterval.Milliseconds(),
		LeaseTtlMs: s.cfg.LeaseTTL.Milliseconds(), ServerVersion: s.cfg.Version, Capabilities: []string{agentv1.CapLogChunks, agentv1.CapBatch},
	}}}); err != nil {
		return err
	}
	// Reconcile the tasks the agent still runs from an earlier session.
	s.reconcile(ctx, a, se, reg.GetRunning())
	s.wakeAll()

	sendErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				sendErr <- nil
				return
			case m := <-se.out:
				if err := se.sendQueued(m, stream.Send); err != nil {
					sendErr <- err
					cancel(err)
					return
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	pl := newPipeline(maxInFlight)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				cancel(err)
				return
			}
			if err := s.handleAgentMessage(ctx, a, se, pl, m); err != nil {
				recvErr <- err
				cancel(err)
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
	case err = <-recvErr:
	}
	if err == nil {
		err = context.Cause(ctx)
	}
	// The agent closed its stream (EOF) or went away (its context, or the connection's,
	// cancelled): an ordinary end, not an error.
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	log.Info("agent session ended", "err", err)
	return status.Error(codes.Aborted, fmt.Sprint(err))
}

func validateRegister(r *agentv1.Register) error {
	switch {
	case r == nil:
		return errors.New("the first message of a session must be a register")
	case r.GetAgentId() == "":
		return errors.New("register: agent_id is empty")
	case r.GetProtocolVersion() != ProtocolVersion:
		return fmt.Errorf("register: protocol_version %d: this server speaks %d", r.GetProtocolVersion(), ProtocolVersion)
	case len(r.GetTypes()) == 0:
		return errors.New("register: types is empty: an agent must serve at least one task type")
	case r.GetTotalSlots() > MaxTotalSlots:
		return fmt.Errorf("register: total_slots %d is over the server's limit of %d slots an agent (sched.MaxTotalSlots)", r.GetTotalSlots(), MaxTotalSlots)
	case len(r.GetRunning()) > MaxRunningReported:
		return fmt.Errorf("register: running lists %d tasks, over the limit of %d", len(r.GetRunning()), MaxRunningReported)
	}
	return validateTypes("register", r.GetTypes())
}

// validateTypes checks the types an agent declares against the limits.
func validateTypes(msg string, types []*agentv1.TaskType) error {
	if len(types) > MaxAgentTypes {
		return fmt.Errorf("%s: %d task types is over the server's limit of %d types an agent (sched.MaxAgentTypes): serve fewer types per agent", msg, len(types), MaxAgentTypes)
	}
	for i, t := range types {
		switch {
		case t.GetName() == "":
			return fmt.Errorf("%s: types[%d].name is empty", msg, i)
		case !typeRE.MatchString(t.GetName()):
			return fmt.Errorf("%s: types[%d].name %.140q is not a task type name (letters, digits, '.', '_', '-'; at most 128)", msg, i, t.GetName())
		case t.GetSlots() > MaxTypeSlots:
			return fmt.Errorf("%s: types[%d] (%s): slots %d is over the server's limit of %d slots a type (sched.MaxTypeSlots)", msg, i, t.GetName(), t.GetSlots(), MaxTypeSlots)
		}
	}
	return nil
}

// register records a's new session, replacing an older one. att is the identity its
// host attests for a relayed session (nil on the agent port). The id of a guest relayed
// by a host can only be taken by sessions that host relays for that guest; nothing of
// such an agent changes when another session claims its id.
func (s *Server) register(r *agentv1.Register, se *session, att *GuestAddr) (*agent, error) {
	now := time.Now()
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	a := s.agents.byID[r.GetAgentId()]
	if a != nil && a.hostID != "" && (att == nil || att.Host != a.hostID) {
		return nil, fmt.Errorf("register: agent_id %q belongs to a guest of host %s; only that host's relay may register it", r.GetAgentId(), a.hostID)
	}
	if a != nil && a.gone {
		return nil, fmt.Errorf("register: guest %q is gone (its host reported it); it cannot register again", r.GetAgentId())
	}
	if a == nil {
		a = &agent{id: r.GetAgentId(), running: map[string]*assignment{}, types: map[string]*typeSlot{}}
		s.agents.byID[a.id] = a
	}
	if a.sess != nil {
		a.sess.close(errors.New("replaced by a new session of the same agent"))
	}
	a.host, a.version, a.state, a.sess = r.GetHost(), r.GetAgentVersion(), agentConnected, se
	if att != nil {
		a.host, a.hostID, a.pool = att.Host, att.Host, att.Pool
		a.maxTasks = s.hosts.maxTasks(att.Host, att.Pool)
	}
	a.connectedAt, a.lastHeartbeat, a.load = now, now, r.GetLoad()
	c := r.GetCapacity()
	a.capacity = store.Requirements{CPUMillis: c.GetCpuMillis(), MemoryBytes: c.GetMemoryBytes(), Labels: c.GetLabels()}
	a.total = int(r.GetTotalSlots())
	s.setTypes(a, r.GetTypes())
	if a.index == nil {
		s.agents.index.add(a)
	}
	return a, nil
}

// setTypes updates a's types and slots, keeping the running counts, and reports
// whether a type got more slots (or is new). Caller holds s.agents.mu.
func (s *Server) setTypes(a *agent, types []*agentv1.TaskType) bool {
	if sameTypes(a, types) { // every heartbeat: update in place, file again only if slots moved
		more, moved := false, false
		for _, t := range types {
			ts := a.types[t.GetName()]
			n := newTypeSlot(t)
			more, moved = more || n.slots > ts.slots, moved || n.slots != ts.slots
			n.ahead = ts.ahead
			*ts = n
		}
		for _, as := range a.running { // counted again, as a new map would be
			a.types[as.typ].running++
		}
		a.recountAhead()
		if moved {
			a.reindex()
		}
		return more
	}
	more := false
	nt := map[string]*typeSlot{}
	for _, t := range types {
		ts := newTypeSlot(t)
		if old := a.types[t.GetName()]; old == nil || ts.slots > old.slots {
			more = true
		}
		nt[t.GetName()] = &ts
	}
	for typ, old := range a.types {
		if ts := nt[typ]; ts != nil {
			ts.ahead = old.ahead
		}
	}
	for _, as := range a.running {
		if ts := nt[as.typ]; ts != nil {
			ts.running++
		} else {
			nt[as.typ] = &typeSlot{running: 1} // no slots: it only drains
		}
	}
	a.types = nt
	a.recountAhead()
	a.reindex()
	return more
}

// newTypeSlot is t as the agent declared it, nothing running (slots 0 counts as 1).
func newTypeSlot(t *agentv1.TaskType) typeSlot {
	ts := typeSlot{version: t.GetVersion(), slots: int(t.GetSlots()), min: int(t.GetMinSlots()),
		tolerable: time.Duration(t.GetTolerableDelayMs()) * time.Millisecond,
		delay:     time.Duration(t.GetDelayMs()) * time.Millisecond, agentRunning: int(t.GetRunning())}
	if ts.slots == 0 {
		ts.slots = 1
	}
	return ts
}

// sameTypes reports whether types names exactly the types a has, each once.
func sameTypes(a *agent, types []*agentv1.TaskType) bool {
	if len(types) != len(a.types) {
		return false
	}
	for i, t := range types {
		if a.types[t.GetName()] == nil {
			return false
		}
		for _, u := range types[:i] {
			if u.GetName() == t.GetName() {
				return false
			}
		}
	}
	return true
}

// lose marks a lost when its session se ends (unless a newer session replaced it).
// Its leases stay until they expire: the agent may reconnect and report.
func (s *Server) lose(a *agent, se *session, log *slog.Logger) {
	se.close(errors.New("session ended"))
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	s.requeueTransient(a, se) // transient tasks are resent at once (transient.go)
	releaseSession(a, se)     // slots booked for preempted tasks (preempt.go)
	if a.sess != se {
		return
	}
	a.sess, a.state, a.lostAt = nil, agentLost, time.Now()
	a.reindex()
	log.Warn("agent lost", "running", len(a.running))
}

// reconcile checks the tasks an agent says it still runs (after a reconnect): current
// leases are kept and renewed, the others cancelled on the agent.
func (s *Server) reconcile(ctx context.Context, a *agent, se *session, running []*agentv1.RunningTask) {
	defer s.requeueUnlisted(ctx, a, se, running)
	var keep []store.LeaseRef
	for _, r := range running {
		t, err := s.st.Get(ctx, r.GetTaskId())
		if err != nil || t.LeaseID != r.GetLeaseId() || t.AgentID != a.id || !secretOK(t.LeaseSecret, r.GetLeaseSecret()) || t.State.Terminal() || t.State == store.Queued {
			se.send(cancelMsg(r.GetTaskId(), r.GetLeaseId(), agentv1.CancelKind_CANCEL_KIND_SUPERSEDED, "lease no longer current"))
			continue
		}
		if t.CancelRequested {
			se.send(cancelMsg(t.ID, t.LeaseID, agentv1.CancelKind_CANCEL_KIND_CLIENT, "cancelled by client"))
		}
		s.agents.mu.Lock()
		if old := a.running[t.ID]; old == nil || old.leaseID != t.LeaseID {
			a.release(t.ID, 0)
			if a.types[t.Type] == nil {
				a.types[t.Type] = &typeSlot{}
			}
			a.reserve(t.ID, t.Type)
			as := a.running[t.ID]
			as.leaseID, as.secret, as.sess, as.tenant = t.LeaseID, t.LeaseSecret, se, t.Tenant
			a.acked(as) // it runs: the agent says so
			if t.Timeout > 0 {
				as.deadline = t.LeasedAt.Add(t.Timeout)
			}
		}
		s.agents.mu.Unlock()
		keep = append(keep, store.LeaseRef{TaskID: t.ID, LeaseID: t.LeaseID})
	}
	if _, err := s.st.Renew(ctx, a.id, keep, time.Now().Add(s.cfg.LeaseTTL)); err != nil {
		s.log.Error("renewing leases after reconnect", "agent", a.id, "err", err)
	}
}

// requeueUnlisted ends at once the leases a assigned on an earlier session that its
// new session se does not list as running: their Assign never reached the agent (the
// session broke, or the server closed it because its send buffer was full), so they are
// requeued now instead of at lease expiry. This is the resync after a dropped session.
func (s *Server) requeueUnlisted(ctx context.Context, a *agent, se *session, running []*agentv1.RunningTask) {
	listed := map[string]bool{}
	for _, r := range running {
		listed[r.GetTaskId()] = true
	}
	var stale []string
	s.agents.mu.Lock()
	for id, as := range a.running {
		if !listed[id] && as.leaseID != 0 && as.sess != se {
			stale = append(stale, id)
		}
	}
	s.agents.mu.Unlock()
	stale = append(stale, s.unlistedElsewhere(ctx, a, se, listed)...) // leased by another replica
	now := time.Now()
	for _, id := range stale {
		t, err := s.st.Get(ctx, id)
		if err != nil || t.AgentID != a.id || (t.State != store.Leased && t.State != store.Running) {
			continue
		}
		s.expire(ctx, t, now, fmt.Sprintf("lease %d: agent %s reconnected without the task (its assignment never reached it)", t.LeaseID, a.id))
	}
}

// renewKey orders a session's heartbeats in its pipeline (no task id is empty).
const renewKey = ""

// maxInFlight bounds the acks and reports of one session being recorded at once.
const maxInFlight = 512

// pipeline runs the acks and reports of one session concurrently, so that those
// arriving together are recorded in one group commit, while the messages of one task
// still run one after the other in the order they arrived.
type pipeline struct {
	mu   sync.Mutex
	tail map[string]chan struct{} // task id -> done of its last message
	sem  chan struct{}
}

func newPipeline(n int) *pipeline {
	return &pipeline{tail: map[string]chan struct{}{}, sem: make(chan struct{}, n)}
}

// run runs fn after the earlier messages of task id; it blocks while the session has
// too many messages in flight.
func (p *pipeline) run(id string, fn func()) {
	p.sem <- struct{}{}
	done := make(chan struct{})
	p.mu.Lock()
	prev := p.tail[id]
	p.tail[id] = done
	p.mu.Unlock()
	go func() {
		if prev != nil {
			<-prev
		}
		fn()
		p.mu.Lock()
		if p.tail[id] == done {
			delete(p.tail, id)
		}
		p.mu.Unlock()
		close(done)
		<-p.sem
	}()
}

func (s *Server) handleAgentMessage(ctx context.Context, a *agent, se *session, pl *pipeline, m *agentv1.AgentMessage) error {
	// Any message proves the agent alive, not only heartbeats (no lock: agent.lastSeen).
	se.seen.Store(time.Now().UnixNano())
	switch m := m.GetMsg().(type) {
	case *agentv1.AgentMessage_Heartbeat:
		if err := validateTypes("heartbeat", m.Heartbeat.GetTypes()); err != nil {
			s.metrics.refused.WithLabelValues("limits").Inc()
			return err
		}
		if n := len(m.Heartbeat.GetRunning()); n > MaxRunningReported {
			s.metrics.refused.WithLabelValues("limits").Inc()
			return fmt.Errorf("heartbeat: running lists %d tasks, over the limit of %d", n, MaxRunningReported)
		}
		// The renewal is a store write: it runs beside the receive loop (one at a time per
		// session, in order), so that a slow store never stops the server reading this
		// agent's messages, and so never makes a live agent look silent.
		hb := m.Heartbeat
		pl.run(renewKey, func() {
			s.heartbeat(ctx, a, hb)
			if qs := s.queueStatus(a); qs != nil {
				se.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_QueueStatus{QueueStatus: qs}})
			}
		})
	case *agentv1.AgentMessage_Ack:
		return s.agentBatch(ctx, a, se, pl, &agentv1.AgentBatch{Acks: []*agentv1.Ack{m.Ack}})
	case *agentv1.AgentMessage_Report:
		return s.agentBatch(ctx, a, se, pl, &agentv1.AgentBatch{Reports: []*agentv1.Report{m.Report}})
	case *agentv1.AgentMessage_Batch:
		return s.agentBatch(ctx, a, se, pl, m.Batch)
	case *agentv1.AgentMessage_LogChunk:
		if n := len(m.LogChunk.GetLog().GetLines()); n > MaxChunkLines {
			s.metrics.refused.WithLabelValues("limits").Inc()
			return fmt.Errorf("log chunk: %d lines, over the limit of %d", n, MaxChunkLines)
		}
		pl.run(m.LogChunk.GetTaskId(), func() { s.logChunk(ctx, a, m.LogChunk) })
	case *agentv1.AgentMessage_Register:
		return errors.New("register sent twice in one session")
	default:
		return fmt.Errorf("unknown agent message %T", m)
	}
	return nil
}

// heartbeat records load and renews the leases of the tasks the agent runs, except
// those past their timeout plus grace (they expire).
func (s *Server) heartbeat(ctx context.Context, a *agent, hb *agentv1.Heartbeat) {
	now := time.Now()
	var refs []store.LeaseRef
	s.agents.mu.Lock()
	a.lastHeartbeat, a.load = now, hb.GetLoad()
	// The dispatcher is woken only if the agent can take more than before: more slots,
	// or slots of preempted tasks freed. One wake per agent per heartbeat would be a
	// dispatch round per heartbeat with many agents.
	pending, more := a.pending(), false
	if len(hb.GetTypes()) > 0 {
		more = s.setTypes(a, hb.GetTypes())
	}
	for _, r := range hb.GetRunning() {
		as := a.running[r.GetTaskId()]
		if as == nil || as.leaseID != r.GetLeaseId() || !secretOK(as.secret, r.GetLeaseSecret()) {
			continue
		}
		if !s.renewDue(as, now) {
			continue
		}
		refs = append(refs, store.LeaseRef{TaskID: r.GetTaskId(), LeaseID: r.GetLeaseId()})
	}
	// Assigns the agent has not read yet (a starved guest): vouch.go.
	refs = append(refs, s.unackedDue(a, func(id string) bool { return listedIn(hb.GetRunning(), id) }, now)...)
	releaseStopped(a, hb.GetRunning()) // preempted tasks the agent has stopped (preempt.go)
	more = more || a.pending() < pending
	s.agents.mu.Unlock()
	s.renewLeases(ctx, a, refs, now) // vouch.go
	if more {
		s.wake()
	}
}

// ack moves an acknowledged assignment to running, or requeues a refused one.
func (s *Server) ack(ctx context.Context, a *agent, se *session, ack *agentv1.Ack) {
	now := time.Now()
	if strings.HasPrefix(ack.GetTaskId(), transientPrefix) {
		s.ackTransient(a, ack)
		s.wake()
		return
	}
	switch s.holds(ctx, a, ack.GetTaskId(), ack.GetLeaseId(), ack.GetLeaseSecret()) {
	case leaseStale:
		// The lease ended (expired, superseded, the task finished or was cancelled)
		// while the ack was on its way: usual after a reconnect, nothing to refuse.
		s.log.Debug("an ack for a lease that ended ignored", "agent", a.id, "task", ack.GetTaskId(), "lease", ack.GetLeaseId())
		return
	case leaseWrongSecret:
		s.metrics.refused.WithLabelValues("lease_secret").Inc()
		s.log.Warn("an ack without its lease's secret ignored", "agent", a.id, "task", ack.GetTaskId(), "lease", ack.GetLeaseId())
		return
	}
	deferred := false
	s.agents.mu.Lock()
	if as := a.running[ack.GetTaskId()]; as != nil && as.leaseID == ack.GetLeaseId() {
		a.acked(as)
		deferred = ack.GetAccepted() && s.deferStart(a, as, now)
	}
	s.agents.mu.Unlock()
	s.wake() // an agent at MaxUnacked may take work again
	if ack.GetAccepted() {
		// The start is applied without reading the task: the update holds only while it
		// is still leased under the ack's lease. A batch task's start is written later,
		// or with its result (starts.go).
		if !deferred {
			s.writeStart(ctx, ack.GetTaskId(), ack.GetLeaseId(), now, now)
		}
		return
	}
	t, err := s.st.Get(ctx, ack.GetTaskId())
	if err != nil || t.LeaseID != ack.GetLeaseId() || t.AgentID != a.id {
		return
	}
	u, err := store.Transition(t, store.EvRefuse, store.Change{Now: now, Error: "agent " + a.id + " refused the task: " + ack.GetError(), FailureKind: store.Refused})
	if err != nil {
		return
	}
	nt, err := s.st.Update(ctx, u)
	if err != nil {
		return
	}
	s.releaseLease(a.id, t.ID, t.LeaseID)
	s.finished(nt)
	s.wakeType(nt.Type)
}

// Report applies one result report from agentID and says what happened to it. It is
// idempotent: a repeated report is acknowledged as a duplicate and changes nothing; a
// report under a lease that is no longer current is refused as superseded.
func (s *Server) Report(ctx context.Context, agentID string, r *agentv1.Report) *agentv1.ReportAck {
	if strings.HasPrefix(r.GetTaskId(), transientPrefix) {
		return s.reportTransient(agentID, r)
	}
	ack := &agentv1.ReportAck{TaskId: r.GetTaskId(), LeaseId: r.GetLeaseId()}
	reject := func(outcome agentv1.ReportOutcome, format string, args ...any) *agentv1.ReportAck {
		ack.Outcome, ack.Error = outcome, fmt.Sprintf(format, args...)
		s.metrics.reports.WithLabelValues(strings.ToLower(strings.TrimPrefix(outcome.String(), "REPORT_OUTCOME_"))).Inc()
		return ack
	}
	t, err := s.reportedTask(ctx, agentID, r)
	if errors.Is(err, store.ErrNotFound) {
		return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "no task %s", r.GetTaskId())
	}
	if err != nil {
		return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "reading task %s: %v (report again)", r.GetTaskId(), err)
	}
	if c := classify(t, agentID, r.GetLeaseId(), r.GetLeaseSecret()); c != nil {
		return reject(c.outcome, "%s", c.why)
	}
	var ev store.Event
	var outBlobs map[string]store.BlobRef
	errText := r.GetError()
	var kind store.FailureKind
	switch r.GetStatus() {
	case agentv1.Status_STATUS_SUCCEEDED:
		ev = store.EvSucceed
		sum := sha256.Sum256(r.GetOutput())
		if got := hex.EncodeToString(sum[:]); got != strings.ToLower(r.GetSha256()) {
			ev, kind, errText = store.EvFailRetryable, store.BadOutput, fmt.Sprintf("output sha256 mismatch: the agent reported %q, the output received has %s", r.GetSha256(), got)
		} else if n := outputSize(r); n > s.cfg.MaxInlineBytes {
			ev, kind, errText = store.EvFailFatal, store.OutputTooLarge, fmt.Sprintf("output of %d bytes is over the server's inline limit of %d bytes (server.max_inline_bytes)", n, s.cfg.MaxInlineBytes)
		} else if len(r.GetOutputBlobs()) > 0 {
			// The output files must be in the blob store before the success is recorded
			// (a host collects them from its guest, or the agent stored them).
			o := s.outputBlobs(ctx, t, agentID, r)
			if o.reject {
				return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "%s", o.errText)
			}
			ev, kind, errText, outBlobs = o.ev, o.kind, o.errText, o.refs
		}
	case agentv1.Status_STATUS_FAILED:
		kind = reportKind(r)
		ev = store.EvFailFatal
		// Output over a limit is never retried, whatever the agent says: the same task
		// would produce the same output and fail again.
		if r.GetRetryable() && kind != store.OutputTooLarge {
			ev = store.EvFailRetryable
		}
	case agentv1.Status_STATUS_CANCELLED:
		kind = reportKind(r)
		ev = store.EvFailRetryable // stopped without a client asking (e.g. agent shutdown)
		if t.CancelRequested {
			ev = store.EvCancelled
		}
	default:
		return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "report: status %v is not a valid outcome", r.GetStatus())
	}
	if ev != store.EvSucceed && errText == "" {
		errText = "the agent reported " + strings.ToLower(strings.TrimPrefix(r.GetStatus().String(), "STATUS_")) + " without an error message"
	}
	now := time.Now()
	u, err := store.Transition(t, ev, store.Change{Now: now, Error: errText, FailureKind: kind, Backoff: s.backoff(t.Attempt),
		Usage: s.attemptUsage(agentID, t, time.Duration(r.GetUsage().GetWallMs())*time.Millisecond, time.Duration(r.GetUsage().GetCpuMs())*time.Millisecond, outBlobs)})
	if err != nil {
		return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "%v", err)
	}
	if at := s.reportedStart(agentID, t, now, time.Duration(r.GetUsage().GetWallMs())*time.Millisecond); !at.IsZero() && u.To.Terminal() {
		u.Started, u.StartedAt = true, at // the start, not yet written, is written with the result
	}
	if ev == store.EvSucceed {
		out := r.GetOutput()
		if out == nil {
			out = []byte{}
		}
		u.Output, u.Outputs, u.OutputSHA256, u.OutputBlobs = &out, r.GetOutputs(), strings.ToLower(r.GetSha256()), outBlobs
	}
	nt, err := s.st.Update(ctx, u)
	if errors.Is(err, store.ErrConflict) {
		if c := classify(nt, agentID, r.GetLeaseId(), r.GetLeaseSecret()); c != nil {
			return reject(c.outcome, "%s", c.why)
		}
		return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "task %s changed while recording the report: %v (report again)", t.ID, err)
	}
	if err != nil {
		return reject(agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED, "recording the result of task %s: %v (report again)", t.ID, err)
	}
	s.storeLog(ctx, t, r.GetLog())
	s.metrics.countUsage(t.Tenant, u.Usage)
	s.releaseLease(agentID, t.ID, t.LeaseID)
	s.finished(nt)
	s.wakeType(nt.Type)
	ack.Outcome = agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED
	s.metrics.reports.WithLabelValues("accepted").Inc()
	return ack
}

type verdict struct {
	outcome agentv1.ReportOutcome
	why     string
}

// reportedTask is the task a report is about, as the report's update starts from. A
// success under a lease this server granted to agentID, with that lease's secret, starts
// from the task as the lease left it (assignment.leased): the update is a compare-and-swap
// under that lease, so a task changed since (cancelled, expired, preempted, taken by
// another replica) makes it lose, and Report then classifies the task as it is. Every
// other report (a failure, which depends on a cancel asked since; a lease this server
// does not know) reads the task.
func (s *Server) reportedTask(ctx context.Context, agentID string, r *agentv1.Report) (store.Task, error) {
	if r.GetStatus() == agentv1.Status_STATUS_SUCCEEDED {
		s.agents.mu.Lock()
		var snap *store.Task
		if a := s.agents.byID[agentID]; a != nil {
			if as := a.running[r.GetTaskId()]; as != nil && as.leased != nil && as.leaseID == r.GetLeaseId() && secretOK(as.secret, r.GetLeaseSecret()) {
				snap = as.leased
			}
		}
		s.agents.mu.Unlock()
		if snap != nil {
			return *snap, nil
		}
	}
	return s.st.Get(ctx, r.GetTaskId())
}

// classify says why a report under leaseID (with its secret) from agentID cannot apply
// to t, or nil if it can (t holds that lease and is live). A refusal says nothing of
// the task's current lease or agent unless the caller holds that lease.
func classify(t store.Task, agentID string, leaseID uint64, secret string) *verdict {
	switch {
	case leaseID != t.LeaseID || agentID != t.AgentID:
		return &verdict{agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED,
			fmt.Sprintf("lease %d of task %s is not the task's current lease of this agent (superseded or expired); drop it", leaseID, t.ID)}
	case !secretOK(t.LeaseSecret, secret):
		return &verdict{agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED,
			fmt.Sprintf("lease %d of task %s: lease_secret missing or wrong: send the Assign's lease_secret with every Ack, Report, heartbeat and blob request of the lease", leaseID, t.ID)}
	case t.State.Terminal():
		return &verdict{agentv1.ReportOutcome_REPORT_OUTCOME_DUPLICATE,
			fmt.Sprintf("task %s is already %s under lease %d; nothing changed", t.ID, t.State, leaseID)}
	case t.State == store.Queued:
		return &verdict{agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED,
			fmt.Sprintf("lease %d of task %s expired; the task is queued again; drop it", leaseID, t.ID)}
	}
	return nil
}

// secretOK compares a lease's secret with what a caller sent, in constant time; a
// lease without a secret (leased before secrets existed) matches nothing.
func secretOK(want, got string) bool {
	return want != "" && constantTimeEqual(want, got)
}

// leaseHold is what holds found.
type leaseHold int

const (
	leaseHeld        leaseHold = iota // the agent holds the lease and gave its secret
	leaseStale                        // the lease is no longer the agent's (or the task is gone)
	leaseWrongSecret                  // the lease is the agent's, the secret is not its
)

// holds reports whether agent a holds lease leaseID of taskID with this secret: from
// its assignments, or the store when the server does not know the assignment.
func (s *Server) holds(ctx context.Context, a *agent, taskID string, leaseID uint64, secret string) leaseHold {
	s.agents.mu.Lock()
	as := a.running[taskID]
	if as != nil && as.leaseID == leaseID && as.secret != "" {
		ok := secretOK(as.secret, secret)
		s.agents.mu.Unlock()
		if !ok {
			return leaseWrongSecret
		}
		return leaseHeld
	}
	s.agents.mu.Unlock()
	t, err := s.st.Get(ctx, taskID)
	switch {
	case err != nil || t.AgentID != a.id || t.LeaseID != leaseID || t.State.Terminal() || t.State == store.Queued:
		return leaseStale
	case !secretOK(t.LeaseSecret, secret):
		return leaseWrongSecret
	}
	return leaseHeld
}

// newSecret returns a random lease secret (128 bits, hex).
func newSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func outputSize(r *agentv1.Report) int {
	n := len(r.GetOutput())
	for _, b := range r.GetOutputs() {
		n += len(b)
	}
	return n
}
