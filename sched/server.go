package sched

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/paddockvm/paddock/agent/transport"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Server is the scheduler. Create it with New, serve agents with ServeAgents and
// clients with Handler (or both with Run), and stop it by cancelling Run's context.
type Server struct {
	cfg     Config
	st      store.Store
	log     *slog.Logger
	metrics *metrics
	started time.Time
	shared  bool // st is shared by several replicas (store.Shared; replica.go)

	kick   chan struct{} // wakes the dispatcher
	queue  *queueMeter   // queuing delay per task type, for the agents' allocators
	starts *startQueue   // batch tasks' starts not yet written (starts.go)
	feed   *feed         // task changes, for the web console (events.go)
	hist   *history      // activity samples of the last hour (history.go)
	pipes  *pipes        // waiting tasks by upstream (pipelines.go)

	streams *streams     // open ordered streams (streamapi.go)
	waits   *tenantCount // open Wait calls by tenant (MaxTenantWaits)
	trans   *transients  // transient streams' tasks, in memory only (transient.go)

	// readyMu guards readyGen: the task types that may have tasks ready to dispatch
	// (a submit, a requeue), each with a generation bumped on every hint. A kick of the
	// dispatcher reads the store only for these types; its periodic tick reads every
	// type (retry backoffs, restarts).
	readyMu  sync.Mutex
	readyGen typeHints
	// onlineGen (also guarded by readyMu): the task types of which this server queued
	// online tasks (created or requeued: observedStore) since preemptForOnline last found
	// none of them ready, each with a generation bumped on every hint.
	onlineGen typeHints
	fullScan  atomic.Bool // the next dispatch round reads every type's queue

	// The agents and the hosts, each registry with its own lock. Lock order (doc.go):
	// agents.mu before hosts.mu, never the reverse.
	agents *agentRegistry // the agents, their index, the dispatcher's locality waits (agentreg.go)
	hosts  *hostRegistry  // the host daemons (hostreg.go)

	// waitMu guards waiters: the callers waiting for each task to end (Wait). It is
	// taken alone, never with another lock held.
	waitMu  sync.Mutex
	waiters map[string][]chan struct{}

	relayLis   *chanListener       // agent sessions relayed by hosts (Relay streams)
	bodyBudget *semaphore.Weighted // bytes of client API request bodies being read (guard)
	gcMu       sync.RWMutex        // write: retention's check+delete of a blob; read: touchBlobs
	collectSeq atomic.Uint64       // request ids of Collects
}

// New returns a server over st. It does not take ownership of st.
func New(cfg Config, st store.Store) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = newReplicaID()
	}
	_, shared := st.(store.Shared)
	s := &Server{shared: shared,
		cfg: cfg, st: st, log: cfg.Logger, started: time.Now(),
		kick:      make(chan struct{}, 1),
		readyGen:  typeHints{},
		onlineGen: typeHints{},
		queue:     newQueueMeter(),
		feed:      newFeed(),
		hist:      newHistory(time.Now()),
		streams:   newStreams(),
		waits:     newTenantCount(MaxTenantWaits),
		trans:     newTransients(),
		starts:    &startQueue{},
		pipes:     newPipes(),
		agents:    newAgentRegistry(),
		hosts:     newHostRegistry(),
		waiters:   map[string][]chan struct{}{},

		relayLis: newChanListener(),
	}
	s.st = observe(st, s) // publishes task changes (events.go)
	s.bodyBudget = semaphore.NewWeighted(int64(max(MinClientBodyBudget, 4*s.maxRequestBytes())))
	s.metrics = newMetrics(s)
	return s, nil
}

// Store returns the server's store.
func (s *Server) Store() store.Store { return s.st }

// Run serves the agent port on agentLis and the client port on clientLis until ctx is
// done, runs the dispatcher and the lease sweeper, and then stops everything.
//
// The agent port speaks agent/transport (framed sessions with hello/resync, the same
// protocol as a guest's virtio-serial port) with gRPC inside each session: agents dial
// it with transport.DialTCP (session.TCPDialer).
func (s *Server) Run(ctx context.Context, agentLis, clientLis net.Listener) error {
	return s.RunWith(ctx, Listeners{Agent: agentLis, Client: clientLis})
}

// Listeners are the ports a server serves.
type Listeners struct {
	// Agent is the agent port (agent/transport sessions carrying api/agent/v1).
	Agent net.Listener
	// Client is the client port (api/paddock/v1, /metrics, /healthz).
	Client net.Listener
	// Cluster, when set, is the cluster port host daemons connect to (api/host/v1 over
	// mutual TLS with ClusterTLS, which is then required).
	Cluster    net.Listener
	ClusterTLS *tls.Config
}

// RunWith is Run with the cluster port too: it serves every listener given until ctx
// is done. Without Agent, agents reach the server only through host daemons (Relay on
// the cluster port). Outside dev mode an agent port needs Config.AgentToken. Agent sessions relayed by hosts on the cluster port are served by the same
// agent service as the agent port, with the host-attested guest identity.
func (s *Server) RunWith(ctx context.Context, l Listeners) error {
	if l.Cluster != nil && l.ClusterTLS == nil {
		return errors.New("server: a cluster listener needs its TLS config (mutual TLS is required on the cluster port)")
	}
	if l.Agent != nil && !s.cfg.Dev && s.cfg.AgentToken == "" {
		return errors.New("server: the agent port accepts any agent without an agent token: set server.agent_token (and give agents the same token), " +
			"or serve agents only through host daemons (no agent port), or run in dev mode (--dev)")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clientLis := l.Client
	gs := s.NewAgentServer()
	hs := s.clientServer()
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	wg.Add(4)
	agentAddr := ""
	if l.Agent != nil {
		agentLis := transport.Listen(l.Agent, transport.Options{Name: "paddock-server", Logger: s.log})
		agentAddr = agentLis.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := gs.Serve(agentLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("serving agents on %s: %w", agentLis.Addr(), err)
			}
		}()
	}
	go func() {
		defer wg.Done()
		if err := gs.Serve(s.relayLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
			errc <- fmt.Errorf("serving relayed agents: %w", err)
		}
	}()
	var cs *grpc.Server
	if l.Cluster != nil {
		cs = s.NewClusterServer(l.ClusterTLS)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cs.Serve(l.Cluster); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("serving hosts on %s: %w", l.Cluster.Addr(), err)
			}
		}()
	}
	go func() {
		defer wg.Done()
		s.backlogLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		if err := hs.Serve(clientLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving clients on %s: %w", clientLis.Addr(), err)
		}
	}()
	go func() {
		defer wg.Done()
		s.Loop(ctx)
	}()
	cluster := ""
	if l.Cluster != nil {
		cluster = l.Cluster.Addr().String()
	}
	s.log.Info("server started", "replica", s.cfg.ReplicaID, "agents", agentAddr, "clients", clientLis.Addr().String(), "cluster", cluster, "store", s.st.Describe(), "dev", s.cfg.Dev)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = hs.Shutdown(sctx)
	if cs != nil {
		cs.Stop()
	}
	s.relayLis.Close()
	s.closeSessions()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
	}
	wg.Wait()
	s.log.Info("server stopped")
	return err
}

// agentWindow is the HTTP/2 flow-control window of agent connections, per stream and
// per connection (the agent's side uses the same: agent/session).
const agentWindow = 4 << 20

// NewAgentServer returns a gRPC server serving the agent protocol. A connection that
// runs no RPC for AgentIdleTimeout is closed (one that never opens a Session
// included); keepalive pings check the others.
func (s *Server) NewAgentServer() *grpc.Server {
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(2*s.cfg.MaxInlineBytes+(1<<20)+MaxReportLogBytes), grpc.MaxSendMsgSize(2*s.cfg.MaxInlineBytes+(1<<20)),
		grpc.ConnectionTimeout(10*time.Second),
		// Fixed flow-control windows (as the agent's side has) turn off gRPC's bandwidth
		// estimator, which answers data from an agent (each heartbeat) with an HTTP/2
		// PING that an idle guest must wake up to answer: under TCG every wake-up of a
		// guest is emulated, and with many idle guests they add up.
		grpc.InitialWindowSize(agentWindow), grpc.InitialConnWindowSize(agentWindow),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: s.cfg.AgentIdleTimeout, Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	agentv1.RegisterAgentServiceServer(gs, &agentService{s: s})
	return gs
}

// Loop runs the dispatcher, the lease sweeper and the agent watchdog, measures the
// queuing delay per type for the agents' allocators, samples the history for the
// console's charts, deletes unused blobs past their retention (CollectGarbage) and
// finished tasks past theirs (DeleteExpiredTasks), and over a shared store follows the
// other replicas (replica.go), until ctx is done.
func (s *Server) Loop(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(10)
	go func() { defer wg.Done(); s.historyLoop(ctx) }()
	go func() { defer wg.Done(); s.pipelineLoop(ctx) }()
	go func() { defer wg.Done(); s.wakeupLoop(ctx) }()
	go func() { defer wg.Done(); s.syncLoop(ctx) }()
	go func() { defer wg.Done(); s.gcLoop(ctx) }()
	go func() { defer wg.Done(); s.retentionLoop(ctx) }()
	go func() { defer wg.Done(); s.dispatchLoop(ctx) }()
	go func() { defer wg.Done(); s.sweepLoop(ctx) }()
	go func() { defer wg.Done(); s.queueLoop(ctx) }()
	go func() { defer wg.Done(); s.startLoop(ctx) }()
	wg.Wait()
}

// typeHints is a set of task types, each with a generation bumped on every hint, so
// that a look that began before a hint does not clear it. Its owner's mutex guards it.
type typeHints map[string]uint64

func (h typeHints) hint(typ string) { h[typ]++ }

// get returns the hint generation of typ and whether it is hinted.
func (h typeHints) get(typ string) (uint64, bool) {
	g, ok := h[typ]
	return g, ok
}

// clear drops the hint of typ unless it was hinted again since generation gen.
func (h typeHints) clear(typ string, gen uint64) {
	if g, ok := h[typ]; ok && g == gen {
		delete(h, typ)
	}
}

// wakeType hints that tasks of typ may be ready to dispatch and wakes the dispatcher.
func (s *Server) wakeType(typ string) {
	s.readyMu.Lock()
	s.readyGen.hint(typ)
	s.readyMu.Unlock()
	s.wake()
}

// readyHint returns the hint generation of typ and whether it is hinted.
func (s *Server) readyHint(typ string) (uint64, bool) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.readyGen.get(typ)
}

// clearReady drops the hint of typ unless it was hinted again since generation gen.
func (s *Server) clearReady(typ string, gen uint64) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.readyGen.clear(typ, gen)
}

// wakeAll wakes the dispatcher for a round that reads every type's queue (a new
// agent, requeued tasks of several types).
func (s *Server) wakeAll() {
	s.fullScan.Store(true)
	s.wake()
}

func (s *Server) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// notifyTerminal wakes the waiters of a task that became terminal.
func (s *Server) notifyTerminal(id string) {
	s.waitMu.Lock()
	ws := s.waiters[id]
	delete(s.waiters, id)
	s.waitMu.Unlock()
	for _, w := range ws {
		close(w)
	}
}

func (s *Server) addWaiter(id string) chan struct{} {
	c := make(chan struct{})
	s.waitMu.Lock()
	s.waiters[id] = append(s.waiters[id], c)
	s.waitMu.Unlock()
	return c
}

func (s *Server) removeWaiter(id string, c chan struct{}) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	ws := s.waiters[id]
	for i, w := range ws {
		if w == c {
			s.waiters[id] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(s.waiters[id]) == 0 {
		delete(s.waiters, id)
	}
}

// backoff returns the delay before retry number attempt (1 = after the first
// attempt): exponential from RetryBase up to RetryMax, with jitter in [d/2, d).
func (s *Server) backoff(attempt int) time.Duration {
	d := s.cfg.RetryBase
	for i := 1; i < attempt && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.RetryMax)
	if d <= 0 {
		return 0
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}
