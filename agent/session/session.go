package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/paddockvm/paddock/agent/alloc"
	"github.com/paddockvm/paddock/agent/transport"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/api/guestabi"
)

// ProtocolVersion is the agent protocol version this package speaks.
const ProtocolVersion = 1

// TaskType is one task type an Executor serves.
type TaskType struct {
	Name, Version string
	// Concurrency is the suggested number of tasks of this type at once (0: none).
	Concurrency int
}

// Task is one assignment to run.
type Task struct {
	ID          string
	LeaseID     uint64
	LeaseSecret string // the Assign's lease_secret, sent back with everything about the lease
	Type        string
	Payload     []byte
	Inputs      map[string][]byte
	Attempt     int
	Deadline    time.Time // zero: none
	// InputBlobs are the task's inputs of any size (Assign.input_blobs), by input name;
	// DataPath says how they arrive and how output files leave. MaxOutputBytes bounds
	// the sum of the output files (0: no limit).
	InputBlobs     map[string]BlobRef
	DataPath       agentv1.DataPath
	MaxOutputBytes int64
	// InputFiles are InputBlobs as files the handler reads, and OutputDir the
	// directory it writes output files in; the session sets both before Execute
	// (under DATA_PATH_SHARED: the guest's shares, api/guestabi; under
	// DATA_PATH_STREAM: Config.DataDir). Both are empty for a task without a data path.
	InputFiles map[string]InputFile
	// OnLog, set by the session before Execute, takes each line the handler logs
	// while the task runs (it never blocks): the session sends them to the server in
	// LogChunks. An executor that does not call it returns its lines in Result.Log.
	OnLog     func(*agentv1.LogLine)
	OutputDir string
}

// BlobRef names a content-addressed blob.
type BlobRef struct {
	Digest string // "sha256:<64 hex digits>"
	Size   int64
}

// InputFile is one input blob as a file, its size checked.
type InputFile struct {
	Path   string
	Size   int64
	Digest string
}

// OutputFile is one file the handler wrote in Task.OutputDir, named by its output
// name, with the size and digest computed while it was written.
type OutputFile struct {
	Size   int64
	Digest string
}

// Usage is what a run cost.
type Usage struct{ Wall, CPU time.Duration }

// Result is the outcome of a run; Error is empty on success.
type Result struct {
	Output  []byte
	Outputs map[string][]byte
	// OutputFiles are the files the handler wrote in Task.OutputDir; the report
	// names them as output blobs.
	OutputFiles map[string]OutputFile
	Error       string
	Retryable   bool
	// Kind is what kind of failure this was, set where it happened (the report's
	// failure_kind); UNSPECIFIED on success. A cancelled run is always reported as
	// FAILURE_KIND_CANCELLED.
	Kind  agentv1.FailureKind
	Usage Usage
	// Log is what the handler logged during the run (nil: nothing); it travels in
	// the report.
	Log *agentv1.TaskLog
}

// Executor runs tasks. Execute must return once ctx is done (it is cancelled when the
// server cancels the task) and must be safe for concurrent use.
type Executor interface {
	Types() []TaskType
	Execute(ctx context.Context, t Task) Result
}

// Capacity is what the agent offers to task requirements.
type Capacity struct {
	CPUMillis, MemoryBytes int64
	Labels                 map[string]string
}

// Config configures a Session.
type Config struct {
	// AgentID is the agent's stable identity. Required.
	AgentID string
	// Host is the host the agent runs on.
	Host string
	// Version is the agent's Paddock version.
	Version string
	// Dial opens a byte stream to the server's agent port. Required.
	Dial func(ctx context.Context) (net.Conn, error)
	// Token, when set, is sent as "authorization: Bearer <token>".
	Token string
	// TotalSlots is how many tasks of all types the agent runs at once; the
	// concurrency allocator (agent/alloc) shares them among the types. 0: the sum of
	// every type's static share — Slots[type], else the executor's Concurrency for
	// it, else DefaultSlots (default 4) — so an agent configured with per-type slots
	// keeps its capacity.
	TotalSlots   int
	Slots        map[string]int
	DefaultSlots int
	// MinSlots is each type's guaranteed minimum (default 1, never less): the
	// allocator never limits a type below it, so no type starves. The minimums
	// must add up to no more than TotalSlots.
	MinSlots map[string]int
	// TolerableDelay is how long a task of a type may queue (on the server) before
	// the type is short of slots; DefaultTolerableDelay (default 1s) applies to the
	// types it does not list. Every heartbeat interval the allocator gives the slots
	// beyond the minimums to the types whose queuing delay is furthest above their
	// tolerable delay, in multiples of it.
	TolerableDelay        map[string]time.Duration
	DefaultTolerableDelay time.Duration
	// Clock is the allocator's clock; tests drive a fake one. Default: real time.
	Clock alloc.Clock
	// Capacity is offered to task requirements.
	Capacity Capacity
	// ReconnectMin and ReconnectMax bound the reconnect backoff. Defaults 100ms, 5s.
	ReconnectMin, ReconnectMax time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// OnReport, when set, is called with every report sent and the ack it got (tests
	// record reports with it to replay them).
	OnReport func(r *agentv1.Report, ack *agentv1.ReportAck)
	// Memory, when set, is called for every Register and Heartbeat and its figures go
	// into their Load (memory_used_bytes, agent_rss_bytes, handlers_rss_bytes,
	// handlers_up), for operators (`paddock vm ls`).
	Memory func() Memory
	// OnRegistered, when set, is called after each successful registration (the agent
	// returns its start-up garbage to the OS then).
	OnRegistered func()

	// InRoot and OutRoot are where the guest's input and output shares are mounted
	// (DATA_PATH_SHARED). Defaults guestabi.InDir and guestabi.OutDir; tests use
	// temporary directories.
	InRoot, OutRoot string
	// StagePoll is how often the session looks for the host's staging marker while
	// a task waits for its inputs (default 25ms).
	StagePoll time.Duration
	// DataDir is where a DATA_PATH_STREAM task's inputs are fetched to and its output
	// files written (<DataDir>/<task>.<lease>/{in,out}), removed once the server
	// acknowledged the report. Default: paddock-agent-<AgentID> under os.TempDir().
	// Whatever is in it when Run starts is left from an earlier run and removed.
	DataDir string
}

// Memory is what Config.Memory reports: bytes (0 when unknown) and a count.
type Memory struct {
	GuestUsed   int64 // the machine's memory in use (MemTotal - MemAvailable)
	AgentRSS    int64 // the agent process's VmRSS
	AgentAnon   int64 // its RssAnon (heap, stacks: not its binary's pages)
	HandlersRSS int64 // the running handler processes' VmRSS, summed
	HandlersUp  int   // how many handler processes run
}

// load returns the Load for a Register or Heartbeat with running tasks running.
func (s *Session) load(running int) *agentv1.Load {
	l := &agentv1.Load{Running: uint32(running)}
	if s.cfg.Memory != nil {
		m := s.cfg.Memory()
		l.MemoryUsedBytes, l.AgentRssBytes, l.HandlersRssBytes, l.HandlersUp = m.GuestUsed, m.AgentRSS, m.HandlersRSS, uint32(max(m.HandlersUp, 0))
		l.AgentAnonBytes = m.AgentAnon
	}
	return l
}

// TCPDialer returns a Config.Dial that dials the server's agent port at addr over TCP
// and starts an agent/transport session on it (the port speaks agent/transport, as a
// guest's virtio-serial port does). Given several addresses (server replicas sharing
// one store), each dial tries them in turn, starting after the one reached last
// (transport.ServerList): when a replica dies, the reconnect goes to another.
func TCPDialer(addr string, more ...string) func(ctx context.Context) (net.Conn, error) {
	if len(more) == 0 {
		return func(ctx context.Context) (net.Conn, error) {
			return transport.DialTCP(ctx, addr, transport.Options{})
		}
	}
	sl, _ := transport.NewServerList(append([]string{addr}, more...), transport.Options{}) // never fails: addresses given
	return sl.Dial
}

// Session is the agent's session with the server. Run it with Run.
//
// Per-type concurrency: the session owns an alloc.Allocator over TotalSlots and
// publishes its allocation (each type's limit) in Register and in every
// Heartbeat; the server dispatches a type to this agent only while fewer tasks of
// it run than its limit (and never more than TotalSlots in all). Queuing delay is
// measured on the server, because that is where tasks wait for a slot: the
// server answers a heartbeat with a QueueStatus (per type: how long the ready
// tasks have waited, and how many there are) whenever tasks of its types wait (no
// status means nothing waits), which the session feeds to
// Allocator.Observe; at the next heartbeat tick it calls Rebalance (one cycle per
// heartbeat interval) and sends the new limits. The agent does not queue tasks
// itself: queueing here would hold leases the server could give to an idle agent,
// and would hide the backlog from the server's priorities and from operators. The one
// exception is bounded: transient stream items the server sends ahead of the free
// slots, only when no agent has a free slot for them (queue.go).
type Session struct {
	cfg      Config
	ex       Executor
	log      *slog.Logger
	versions map[string]string // task type -> handler version
	alloc    *alloc.Allocator
	total    int

	// mu guards the fields below.
	mu        sync.Mutex
	runs      map[string]*run            // by task id
	unacked   map[string]*agentv1.Report // finished, not yet acknowledged; by task id
	out       chan *agentv1.AgentMessage // the current connection's send queue; nil while disconnected
	outCancel context.CancelCauseFunc    // ends the current connection; nil while disconnected
	wg        sync.WaitGroup
	// conn is the current connection's client (blob transfers use it), nil while
	// disconnected; connReady is closed while conn is set.
	conn      agentv1.AgentServiceClient
	connReady chan struct{}
	// dataDirs are the DATA_PATH_STREAM data directories of leases, by LeaseDir;
	// spare are empty ones kept for the next tasks without input blobs (see dataDir).
	dataDirs map[string]*dataDir
	spare    []string
	// logChunks: the current connection's server takes LogChunks (agentv1.CapLogChunks).
	logChunks bool

	// queued are the tasks sent ahead waiting for a slot, in the order they came;
	// startPending: startQueued is due to run (queue.go).
	queued       []queuedRun
	startPending bool

	idle chan func() // hands a task to an idle task goroutine (spawn)
}

type run struct {
	leaseID  uint64
	secret   string
	typ      string
	slot     *alloc.Ticket // released when the task ends
	cancel   context.CancelCauseFunc
	byServer bool // cancelled by the server
	queued   bool // sent ahead, waiting in s.queued for its slot (queue.go)
}

// New returns a session for ex.
func New(cfg Config, ex Executor) (*Session, error) {
	switch {
	case cfg.AgentID == "":
		return nil, errors.New("session config: AgentID is empty")
	case cfg.Dial == nil:
		return nil, errors.New("session config: Dial is nil: give a dialer (TCPDialer(addr), or a transport's Dial)")
	case ex == nil:
		return nil, errors.New("session: no executor")
	}
	if cfg.DefaultSlots <= 0 {
		cfg.DefaultSlots = 4
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(5*time.Second, cfg.ReconnectMin)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DefaultTolerableDelay <= 0 {
		cfg.DefaultTolerableDelay = time.Second
	}
	if cfg.InRoot == "" {
		cfg.InRoot = guestabi.InDir
	}
	if cfg.OutRoot == "" {
		cfg.OutRoot = guestabi.OutDir
	}
	if cfg.StagePoll <= 0 {
		cfg.StagePoll = 25 * time.Millisecond
	}
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join(os.TempDir(), "paddock-agent-"+cfg.AgentID)
	}
	s := &Session{cfg: cfg, ex: ex, log: cfg.Logger.With("agent", cfg.AgentID), versions: map[string]string{},
		runs: map[string]*run{}, unacked: map[string]*agentv1.Report{}, connReady: make(chan struct{}), dataDirs: map[string]*dataDir{}, idle: make(chan func())}
	ts := ex.Types()
	if len(ts) == 0 {
		return nil, errors.New("session: the executor serves no task types")
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	acfg := alloc.Config{Total: cfg.TotalSlots, Clock: cfg.Clock}
	sumShares, sumMin := 0, 0
	for _, t := range ts {
		if _, dup := s.versions[t.Name]; dup {
			return nil, fmt.Errorf("session: the executor serves task type %q twice", t.Name)
		}
		s.versions[t.Name] = t.Version
		n := cfg.Slots[t.Name]
		if n <= 0 {
			n = t.Concurrency
		}
		if n <= 0 {
			n = cfg.DefaultSlots
		}
		sumShares += n
		tc := alloc.TypeConfig{Name: t.Name, Min: max(cfg.MinSlots[t.Name], 1), TolerableDelay: cfg.TolerableDelay[t.Name]}
		if tc.TolerableDelay <= 0 {
			tc.TolerableDelay = cfg.DefaultTolerableDelay
		}
		sumMin += tc.Min
		acfg.Types = append(acfg.Types, tc)
	}
	if acfg.Total <= 0 {
		acfg.Total = max(sumShares, sumMin)
	}
	if sumMin > acfg.Total {
		return nil, fmt.Errorf("session config: TotalSlots %d is less than the %d slots the minimums of the %d task types need (at least 1 each): raise TotalSlots or lower MinSlots",
			acfg.Total, sumMin, len(ts))
	}
	a, err := alloc.New(acfg)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	s.alloc, s.total = a, acfg.Total
	return s, nil
}

// allocation is the allocator's snapshot as the protocol's task types.
func (s *Session) allocation(snap alloc.Snapshot) []*agentv1.TaskType {
	out := make([]*agentv1.TaskType, 0, len(snap.Types))
	for _, t := range snap.Types {
		out = append(out, &agentv1.TaskType{Name: t.Name, Version: s.versions[t.Name], Slots: uint32(t.Limit),
			MinSlots: uint32(t.Min), TolerableDelayMs: t.TolerableDelay.Milliseconds(), Running: uint32(t.Running),
			DelayMs: t.Delay.Milliseconds()})
	}
	return out
}

// heartbeat ends an allocation cycle and returns the heartbeat that publishes its
// result: Rebalance uses the queuing delays the server sent since the last one.
func (s *Session) heartbeat() *agentv1.AgentMessage {
	snap := s.alloc.Rebalance()
	s.mu.Lock()
	n := len(s.runs)
	s.kickQueuedLocked() // a limit raised may have granted queued tasks' tickets
	s.mu.Unlock()
	load := s.load(n) // reads /proc: not under s.mu
	s.mu.Lock()
	defer s.mu.Unlock()
	return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{
		Load: load, Running: s.running(), Types: s.allocation(snap)}}}
}

// observe feeds the server's queue status to the allocator for the next cycle.
func (s *Session) observe(q *agentv1.QueueStatus) {
	for _, t := range q.GetTypes() {
		d := time.Duration(t.GetDelayMs()) * time.Millisecond
		if err := s.alloc.Observe(t.GetType(), d, int(min(t.GetReady(), 1<<30))); err != nil {
			s.log.Debug("queue status for a type this agent does not serve", "type", t.GetType())
		}
	}
}

// Run keeps a session with the server open until ctx is done, reconnecting with
// backoff. Tasks keep running across reconnects. On return every task has ended.
func (s *Session) Run(ctx context.Context) error {
	go WarmCodecs()
	s.cleanDataDir()
	backoff := s.cfg.ReconnectMin
	for ctx.Err() == nil {
		start := time.Now()
		err := s.connect(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			backoff = s.cfg.ReconnectMin
		}
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		s.log.Warn("session with the server ended; reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		backoff = min(backoff*2, s.cfg.ReconnectMax)
	}
	s.mu.Lock()
	for _, r := range s.runs {
		r.cancel(errors.New("agent shutting down"))
	}
	s.kickQueuedLocked() // queued tasks end without running
	s.mu.Unlock()
	s.wg.Wait()
	return ctx.Err()
}

// running lists the leases this agent holds: tasks running and results not yet acked.
// Caller holds s.mu.
func (s *Session) running() []*agentv1.RunningTask {
	var out []*agentv1.RunningTask
	for id, r := range s.runs {
		out = append(out, &agentv1.RunningTask{TaskId: id, LeaseId: r.leaseID, LeaseSecret: r.secret})
	}
	for id, r := range s.unacked {
		if _, ok := s.runs[id]; !ok {
			out = append(out, &agentv1.RunningTask{TaskId: id, LeaseId: r.GetLeaseId(), LeaseSecret: r.GetLeaseSecret()})
		}
	}
	return out
}

// sessionWindow is the HTTP/2 flow-control window of the session's stream and
// connection: fixed (no bandwidth estimation), as large as the transport's own
// window (transport.DefaultWindow), so that a burst of messages never waits on a
// window update over a link whose round trip is milliseconds.
const sessionWindow = 4 << 20

// connect runs one connection until it breaks.
func (s *Session) connect(ctx context.Context) error {
	cc, err := grpc.NewClient("passthrough:///paddock-server",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.cfg.Dial(ctx) }),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)),
		// Fixed flow-control windows turn off gRPC's bandwidth estimator, which
		// otherwise answers data from the server (a QueueStatus after a
		// heartbeat) with an HTTP/2 PING round trip: two more wake-ups of an idle
		// guest per heartbeat, each one emulated under TCG.
		grpc.WithInitialWindowSize(sessionWindow), grpc.WithInitialConnWindowSize(sessionWindow),
		// The transport's 32 KiB write buffer goes back to a pool after each flush
		// instead of staying allocated in an idle agent.
		grpc.WithSharedWriteBuffer(true))
	if err != nil {
		return fmt.Errorf("creating the gRPC client: %w", err)
	}
	defer cc.Close()
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if s.cfg.Token != "" {
		cctx = metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+s.cfg.Token)
	}
	client := agentv1.NewAgentServiceClient(cc)
	stream, err := client.Session(cctx)
	if err != nil {
		return fmt.Errorf("opening the session: %w", err)
	}
	load := s.load(0)
	s.mu.Lock()
	load.Running = uint32(len(s.runs))
	reg := &agentv1.Register{AgentId: s.cfg.AgentID, Host: s.cfg.Host, ProtocolVersion: ProtocolVersion, AgentVersion: s.cfg.Version,
		Types: s.allocation(s.alloc.Snapshot()), TotalSlots: uint32(s.total), Running: s.running(),
		Capacity: &agentv1.Capacity{CpuMillis: s.cfg.Capacity.CPUMillis, MemoryBytes: s.cfg.Capacity.MemoryBytes, Labels: s.cfg.Capacity.Labels},
		Load:     load, Capabilities: []string{agentv1.CapPreemptHandover, agentv1.CapBatch, agentv1.CapQueueAhead}}
	s.mu.Unlock()
	if err := stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Register{Register: reg}}); err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("registering: %w", err)
	}
	regd := first.GetRegistered()
	if regd == nil {
		return fmt.Errorf("registering: the server answered %T, not registered", first.GetMsg())
	}
	hb := time.Duration(regd.GetHeartbeatIntervalMs()) * time.Millisecond
	if hb <= 0 {
		hb = time.Second
	}
	s.log.Info("registered with the server", "session", regd.GetSessionId(), "server", regd.GetServerVersion(), "heartbeat", hb)
	if s.cfg.OnRegistered != nil {
		s.cfg.OnRegistered()
	}

	out := make(chan *agentv1.AgentMessage, 8192)
	s.mu.Lock()
	s.out = out
	s.outCancel = cancel
	s.conn = client
	s.logChunks = slices.Contains(regd.GetCapabilities(), agentv1.CapLogChunks)
	close(s.connReady)
	for _, r := range s.unacked { // results finished while disconnected
		out <- &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: r}}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.out = nil
		s.outCancel = nil
		s.conn = nil
		s.logChunks = false
		s.connReady = make(chan struct{})
		s.mu.Unlock()
	}()

	batch := slices.Contains(regd.GetCapabilities(), agentv1.CapBatch)
	go func() { // sender: the only goroutine calling stream.Send from here on
		t := time.NewTicker(hb)
		defer t.Stop()
		for {
			var err error
			select {
			case <-cctx.Done():
				return
			case m := <-out:
				if batch { // the acks and reports queued now go as one message (batch.go)
					err = drain(m, out, stream.Send)
				} else {
					err = stream.Send(m)
				}
			case <-t.C:
				err = stream.Send(s.heartbeat())
			}
			if err != nil {
				cancel(fmt.Errorf("sending: %w", err))
				return
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			if c := context.Cause(cctx); c != nil && !errors.Is(c, context.Canceled) {
				return c
			}
			return fmt.Errorf("receiving: %w", err)
		}
		switch m := m.GetMsg().(type) {
		case *agentv1.ServerMessage_Assign:
			s.assign(ctx, m.Assign)
		case *agentv1.ServerMessage_Cancel:
			s.cancelTask(m.Cancel)
		case *agentv1.ServerMessage_ReportAck:
			s.acked(m.ReportAck)
		case *agentv1.ServerMessage_Batch:
			for _, ra := range m.Batch.GetReportAcks() {
				s.acked(ra)
			}
			s.assignBatch(ctx, m.Batch.GetAssigns())
		case *agentv1.ServerMessage_QueueStatus:
			s.observe(m.QueueStatus)
		}
	}
}

// errSendQueueFull ends a connection whose send queue overflowed.
var errSendQueueFull = errors.New("the session's send queue is full (the server does not keep up): reconnecting to resync")

// sendLocked queues m on the current connection (dropped while disconnected: reports
// are resent from unacked, heartbeats and acks are not needed). A full queue never
// drops a message silently: it ends the connection, and the reconnect resyncs (the
// Register lists the running tasks, unacknowledged reports are sent again). Caller
// holds s.mu.
func (s *Session) sendLocked(m *agentv1.AgentMessage) {
	if s.out == nil {
		return
	}
	select {
	case s.out <- m:
	default:
		s.log.Error("session send queue full; closing the connection to resync")
		s.outCancel(errSendQueueFull)
		s.out, s.outCancel = nil, nil
	}
}

func (s *Session) assign(ctx context.Context, a *agentv1.Assign) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.assignLocked(ctx, a, nil, nil)
}

// assignBatch takes the assigns of one ServerBatch as assign each, and acknowledges
// them together: their acks go as one AgentBatch (or a few: maxBatchItems), queued
// before any of their reports can be (the tasks report under s.mu).
func (s *Session) assignBatch(ctx context.Context, as []*agentv1.Assign) {
	if len(as) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	acks := make([]*agentv1.Ack, 0, len(as))
	var ready []pending
	for _, a := range as {
		s.assignLocked(ctx, a, &acks, &ready)
	}
	s.runReady(ctx, ready, false)
	for len(acks) > 0 {
		n := min(len(acks), maxBatchItems)
		var m *agentv1.AgentMessage
		if n == 1 {
			m = &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: acks[0]}}
		} else {
			m = &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Batch{Batch: &agentv1.AgentBatch{Acks: acks[:n:n]}}}
		}
		s.sendLocked(m)
		acks = acks[n:]
	}
}

// assignLocked takes assignment a: its ack is queued, or appended to acks when not
// nil. Its run starts at once, or, when ready is not nil and the task has no input
// blobs (it can start without waiting), is appended to ready for runReady. Caller
// holds s.mu.
func (s *Session) assignLocked(ctx context.Context, a *agentv1.Assign, acks *[]*agentv1.Ack, ready *[]pending) {
	ack := func(ok bool, why string) {
		ak := &agentv1.Ack{TaskId: a.GetTaskId(), LeaseId: a.GetLeaseId(), LeaseSecret: a.GetLeaseSecret(), Accepted: ok, Error: why}
		if acks != nil {
			*acks = append(*acks, ak)
			return
		}
		s.sendLocked(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: ak}})
	}
	if old := s.runs[a.GetTaskId()]; old != nil {
		if old.leaseID == a.GetLeaseId() {
			ack(true, "")
			return
		}
		old.byServer = false
		old.cancel(fmt.Errorf("%w by lease %d", errSuperseded, a.GetLeaseId())) // its report is not sent: the server has moved on
		if old.queued {
			s.kickQueuedLocked()
		}
	}
	if u, ok := s.unacked[a.GetTaskId()]; ok && u.GetLeaseId() != a.GetLeaseId() {
		delete(s.unacked, a.GetTaskId())
		s.dropDataLocked(a.GetTaskId(), u.GetLeaseId())
	}
	if _, ok := s.versions[a.GetType()]; !ok {
		ack(false, fmt.Sprintf("this agent serves no task type %q", a.GetType()))
		return
	}
	if id := a.GetReplacesTaskId(); id != "" {
		s.handOverLocked(id, a.GetReplacesLeaseId(), a.GetTaskId())
	}
	var slot *alloc.Ticket
	var err error
	if a.GetMayQueue() { // sent ahead: a slot within the type's limit, now or later (queue.go)
		if len(s.queued) >= maxQueued {
			ack(false, fmt.Sprintf("%d tasks already wait for a slot here (session.maxQueued)", len(s.queued)))
			return
		}
		slot, err = s.alloc.Enqueue(a.GetType())
	} else {
		slot, err = s.alloc.Admit(a.GetType())
	}
	if err != nil {
		ack(false, fmt.Sprintf("no slot for a task of type %q: %v", a.GetType(), err))
		return
	}
	rctx, cancel := context.WithCancelCause(ctx)
	r := &run{leaseID: a.GetLeaseId(), secret: a.GetLeaseSecret(), typ: a.GetType(), slot: slot, cancel: cancel}
	s.runs[a.GetTaskId()] = r
	ack(true, "")
	t := Task{ID: a.GetTaskId(), LeaseID: a.GetLeaseId(), LeaseSecret: a.GetLeaseSecret(), Type: a.GetType(), Payload: a.GetPayload(), Inputs: a.GetInputs(), Attempt: int(a.GetAttempt()),
		DataPath: a.GetDataPath(), MaxOutputBytes: a.GetMaxOutputBytes()}
	if len(a.GetInputBlobs()) > 0 {
		t.InputBlobs = make(map[string]BlobRef, len(a.GetInputBlobs()))
		for name, b := range a.GetInputBlobs() {
			t.InputBlobs[name] = BlobRef{Digest: b.GetDigest(), Size: b.GetSize()}
		}
	}
	if d := a.GetDeadlineUnixMs(); d > 0 {
		t.Deadline = time.UnixMilli(d)
	}
	s.wg.Add(1)
	if a.GetMayQueue() {
		timeout := time.Duration(a.GetTimeoutMs()) * time.Millisecond
		select {
		case <-slot.Ready():
		default:
			s.queueLocked(rctx, ctx, r, t, timeout)
			return
		}
		if timeout > 0 {
			t.Deadline = time.Now().Add(timeout)
		}
	}
	if ready != nil && len(t.InputBlobs) == 0 {
		*ready = append(*ready, pending{ctx: rctx, r: r, t: t})
		return
	}
	s.spawn(func() { s.execute(rctx, r, t) })
}

// workerIdle is how long a task goroutine waits for the next task before it exits.
const workerIdle = 5 * time.Second

// spawn runs fn on an idle task goroutine, else on a new one. A goroutine that ran a
// task keeps its grown stack for the next one (a new goroutine per task grows its stack
// through the handler call again and again: a tenth of the agent's CPU on no-op tasks).
func (s *Session) spawn(fn func()) {
	select {
	case s.idle <- fn:
	default:
		go s.worker(fn)
	}
}

func (s *Session) worker(fn func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		fn()
		t.Reset(workerIdle)
		select {
		case fn = <-s.idle:
		case <-t.C:
			return
		}
	}
}

func (s *Session) execute(ctx context.Context, r *run, t Task) {
	start := time.Now()
	var res Result
	if err := s.prepare(ctx, &t); err != nil {
		res = failure(err, agentv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE)
	} else {
		ll := s.startLiveLog(t)
		t.OnLog = ll.add
		res = s.ex.Execute(ctx, t)
		res.Log = ll.finish(res.Log)
		if res.Error == "" {
			res = s.finish(ctx, t, res)
		}
	}
	s.report(ctx, r, t, res, start)
}

// report ends run r of task t with res (started at start): it frees its slot and
// queues its report, or drops it when the run was superseded. It calls s.wg.Done.
func (s *Session) report(ctx context.Context, r *run, t Task, res Result, start time.Time) {
	s.end(ctx, r, t, res, start, true)
}

// end is report; without kick, the caller has the queued tasks started (kickQueued)
// once it has reported the runs that ended together, so that the slots they free start
// queued tasks in one batch rather than one batch per report.
func (s *Session) end(ctx context.Context, r *run, t Task, res Result, start time.Time, kick bool) {
	defer s.wg.Done()
	if res.Usage.Wall == 0 {
		res.Usage.Wall = time.Since(start)
	}
	rep := &agentv1.Report{TaskId: t.ID, LeaseId: t.LeaseID, LeaseSecret: t.LeaseSecret, Log: res.Log,
		Usage: &agentv1.Usage{WallMs: res.Usage.Wall.Milliseconds(), CpuMs: res.Usage.CPU.Milliseconds()}}
	s.mu.Lock()
	defer s.mu.Unlock()
	cause := context.Cause(ctx) // why the run was stopped, if it was: read before it is ended below
	r.cancel(nil)
	switch {
	case res.Error == "":
		sum := sha256.Sum256(res.Output)
		rep.Status, rep.Output, rep.Outputs, rep.Sha256 = agentv1.Status_STATUS_SUCCEEDED, res.Output, res.Outputs, hex.EncodeToString(sum[:])
		if len(res.OutputFiles) > 0 {
			rep.OutputBlobs = make(map[string]*agentv1.BlobRef, len(res.OutputFiles))
			for name, f := range res.OutputFiles {
				rep.OutputBlobs[name] = &agentv1.BlobRef{Digest: f.Digest, Size: f.Size}
			}
		}
	case r.byServer:
		rep.Status, rep.Error, rep.FailureKind = agentv1.Status_STATUS_CANCELLED, res.Error, agentv1.FailureKind_FAILURE_KIND_CANCELLED
	default:
		rep.Status, rep.Error, rep.Retryable, rep.FailureKind = agentv1.Status_STATUS_FAILED, res.Error, res.Retryable, res.Kind
	}
	if cur := s.runs[t.ID]; cur == r {
		delete(s.runs, t.ID)
	}
	if len(s.dataDirs) > 0 { // most tasks have none: no lease directory name to build
		if d := s.dataDirs[guestabi.LeaseDir(t.ID, t.LeaseID)]; d != nil {
			d.succeeded = rep.Status == agentv1.Status_STATUS_SUCCEEDED
		}
	}
	r.slot.Release()
	if kick {
		s.kickQueuedLocked() // the slot may have gone to a queued task
	}
	if cause != nil && !r.byServer && res.Error != "" {
		// Superseded or shutting down: the server has moved on or will expire the lease.
		s.log.Info("task stopped", "task", t.ID, "lease", t.LeaseID, "why", cause)
		if errors.Is(cause, errSuperseded) {
			s.dropDataLocked(t.ID, t.LeaseID)
			return
		}
	}
	s.unacked[t.ID] = rep
	s.sendLocked(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: rep}})
}

var errSuperseded = errors.New("lease superseded")

func (s *Session) cancelTask(c *agentv1.Cancel) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.runs[c.GetTaskId()]
	if r == nil || r.leaseID != c.GetLeaseId() {
		if u := s.unacked[c.GetTaskId()]; u != nil && u.GetLeaseId() == c.GetLeaseId() && c.GetKind() != agentv1.CancelKind_CANCEL_KIND_CLIENT {
			delete(s.unacked, c.GetTaskId()) // the server dropped that lease; stop reporting it
			s.dropDataLocked(c.GetTaskId(), c.GetLeaseId())
		}
		return
	}
	if c.GetKind() == agentv1.CancelKind_CANCEL_KIND_CLIENT {
		r.byServer = true
		r.cancel(errors.New("cancelled by the server: " + c.GetReason()))
	} else {
		r.cancel(fmt.Errorf("%w: %s", errSuperseded, c.GetReason()))
	}
	if r.queued {
		s.kickQueuedLocked() // it ends without running
	}
}

// handOverLocked frees the slot of the preempted run of task id under leaseID for
// task to, which replaces it (Assign.replaces_task_id): the run is stopped (and drops
// its task without reporting, as for a PREEMPTED cancel) and its slot released now,
// while its handler may still be returning, so that task to is admitted at once. The
// overlap is one task per preempted run: a released slot is released only once. A run
// already gone freed its slot when it ended. Caller holds s.mu.
func (s *Session) handOverLocked(id string, leaseID uint64, to string) {
	r := s.runs[id]
	if r == nil || r.leaseID != leaseID {
		return
	}
	r.byServer = false
	r.cancel(fmt.Errorf("%w: preempted, its slot handed to task %s", errSuperseded, to))
	r.slot.Release()
	s.kickQueuedLocked()
}

func (s *Session) acked(a *agentv1.ReportAck) {
	s.mu.Lock()
	rep := s.unacked[a.GetTaskId()]
	if rep != nil && rep.GetLeaseId() == a.GetLeaseId() {
		delete(s.unacked, a.GetTaskId())
		s.dropDataLocked(a.GetTaskId(), a.GetLeaseId())
	}
	s.mu.Unlock()
	switch a.GetOutcome() {
	case agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED, agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED:
		s.log.Warn("the server refused a report; dropping the task", "task", a.GetTaskId(), "lease", a.GetLeaseId(), "outcome", a.GetOutcome(), "why", a.GetError())
	}
	if s.cfg.OnReport != nil && rep != nil {
		s.cfg.OnReport(rep, a)
	}
}

// Stats is a snapshot of the session for operators.
type Stats struct {
	Running   map[string]int // tasks running per type
	Slots     map[string]int // each type's current limit
	Unacked   int
	Connected bool
	// Alloc is the concurrency allocation (limits, minimums, delays).
	Alloc alloc.Snapshot
}

// Stats returns a snapshot.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Running: map[string]int{}, Slots: map[string]int{}, Unacked: len(s.unacked), Connected: s.out != nil, Alloc: s.alloc.Snapshot()}
	for _, t := range st.Alloc.Types {
		st.Running[t.Name], st.Slots[t.Name] = t.Running, t.Limit
	}
	return st
}
