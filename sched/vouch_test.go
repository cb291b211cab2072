package sched_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// stallConn is a net.Conn whose writes block while it is stalled, as a guest's do
// while its vCPU gets no host CPU: nothing it sends reaches the server.
type stallConn struct {
	net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	stalled bool
	closed  bool
}

func newStallConn(c net.Conn) *stallConn {
	s := &stallConn{Conn: c}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *stallConn) Write(p []byte) (int, error) {
	s.mu.Lock()
	for s.stalled && !s.closed {
		s.cond.Wait()
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	return s.Conn.Write(p)
}

func (s *stallConn) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	return s.Conn.Close()
}

func (s *stallConn) stall(on bool) {
	s.mu.Lock()
	s.stalled = on
	s.cond.Broadcast()
	s.mu.Unlock()
}

// TestHostVouchesForStarvedGuest: a relayed guest's agent that goes silent past the
// agent timeout and past its leases' TTL keeps its session and its task while its host
// reports the guest running with its CPU time rising; it loses them once the host's
// reports stop showing progress, and once server.vouched_timeout passes even while
// they do. Without vouching the session closes within the agent timeout (500 ms).
func TestHostVouchesForStarvedGuest(t *testing.T) {
	cfg := fastConfig() // heartbeat 100 ms: agent timeout 500 ms; lease TTL 1 s
	cfg.VouchedTimeout = 4 * time.Second
	cs := startClusterServer(t, cfg)
	h, err := connectHostWith(t, cs, "host-a", "host-a", hostOpts{statsMs: 100}, &hostv1.Pool{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	// The host's statistics: g1's CPU time rises while rising is set.
	var rising atomic.Bool
	rising.Store(true)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		cpu := int64(1000)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if rising.Load() {
				cpu += 10
			}
			if err := h.ctl.Send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Status{Status: &hostv1.Status{
				Guests: []*hostv1.Guest{{Name: "g1", Pool: "p", State: "busy", CpuTimeMs: cpu}}}}}); err != nil {
				return
			}
		}
	}()

	var cur atomic.Pointer[stallConn]
	startGuestAgent(t, h, "g1", "p", "g1", sleepExec(), func(c *session.Config) {
		dial := c.Dial
		c.Dial = func(ctx context.Context) (net.Conn, error) {
			conn, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			sc := newStallConn(conn)
			cur.Store(sc)
			return sc, nil
		}
	})
	connected := func() bool { a := agentState(t, cs.testServer, "g1"); return a != nil && a.GetState() == "connected" }
	waitFor(t, "g1 connected", 10*time.Second, connected)
	running := func(id string) func() bool {
		return func() bool {
			r, err := cs.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
			return err == nil && r.Msg.GetTask().GetState() == paddockv1.State_STATE_RUNNING
		}
	}

	// Starved while the host vouches: 2.5 s of silence (5 agent timeouts, 2.5 lease
	// TTLs), then it speaks again and its task succeeds on its only attempt.
	first := submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "sleep", Payload: []byte("3s"), MaxAttempts: 1})
	waitFor(t, "the first task running", 10*time.Second, running(first.GetId()))
	sc := cur.Load()
	sc.stall(true)
	time.Sleep(2500 * time.Millisecond)
	if !connected() {
		t.Fatal("g1's session was closed while its host vouched for it")
	}
	sc.stall(false)
	got := wait(t, cs.testServer, first.GetId(), 20*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || len(got.GetAttempts()) != 1 {
		t.Fatalf("the starved guest's task: %v; want succeeded on its one attempt", got)
	}
	if m := metricsText(t, cs.testServer); !strings.Contains(m, "paddock_agent_silences_vouched_total 1") {
		t.Errorf("/metrics lacks paddock_agent_silences_vouched_total 1")
	}

	// The host's reports stop showing progress (a hung guest): the session closes.
	rising.Store(false)
	second := submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "sleep", Payload: []byte("1s"), MaxAttempts: 3})
	waitFor(t, "the second task running", 10*time.Second, running(second.GetId()))
	sc = cur.Load()
	sc.stall(true)
	waitFor(t, "g1's session closed once its CPU time stopped rising", 20*time.Second, func() bool { return !connected() })
	sc.stall(false)
	got = wait(t, cs.testServer, second.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("the hung guest's task: %v; want it succeeded (resynced or requeued)", got)
	}

	// Vouched, but silent past server.vouched_timeout (4 s): the session closes anyway.
	rising.Store(true)
	waitFor(t, "g1 connected again", 20*time.Second, connected)
	sc = cur.Load()
	sc.stall(true)
	time.Sleep(time.Second)
	if !connected() {
		t.Fatal("g1's session was closed one second into a vouched silence")
	}
	waitFor(t, "g1's session closed after the vouched timeout", 30*time.Second, func() bool { return !connected() })
	sc.stall(false)
}

// TestVouchedTimeoutConfig: a vouched timeout shorter than the agent timeout (it could
// never apply) or over an hour (a hung agent holding its tasks that long) is refused,
// naming the key and the fix; negative (the CLI's 0) is off.
func TestVouchedTimeoutConfig(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string // "" for valid
	}{
		{300 * time.Millisecond, "server.vouched_timeout"}, // fastConfig's agent timeout is 500 ms
		{2 * time.Hour, "server.vouched_timeout"},
		{-1, ""},
		{0, ""}, // the default (60 s)
		{time.Minute, ""},
	} {
		cfg := fastConfig()
		cfg.VouchedTimeout = tc.d
		err := cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "0 for off")) {
			t.Errorf("Validate with vouched timeout %v = %v; want %q", tc.d, err, tc.want)
		}
	}
}

// TestHeartbeatRenewsUnreadAssign: an agent that keeps sending heartbeats but has not
// read a task's Assign yet (a starved guest: its heartbeat timer fires before its
// receive loop gets the CPU to read the Assign) lists no task; the lease must still be
// renewed while the Assign is on its way on the live session. Three lease TTLs later
// the agent reports the task, and it succeeds on its one attempt. Before, the lease
// lapsed one TTL after it was granted and the task went dead (lease_expired).
func TestHeartbeatRenewsUnreadAssign(t *testing.T) {
	ts := startServer(t, fastConfig()) // heartbeat 100 ms, lease TTL 1 s
	raw := dialRawAgent(t, ts, "raw", "unread.t")
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "unread.t", MaxAttempts: 1}).GetId()
	var as *agentv1.Assign // received, but neither acknowledged nor listed as running
	for as == nil {
		select {
		case m, ok := <-raw.msgs:
			if !ok {
				t.Fatal("session ended while waiting for an assignment")
			}
			as = m.GetAssign()
		case <-time.After(10 * time.Second):
			t.Fatal("no assignment within 10s")
		}
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err := raw.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}}); err != nil {
			t.Fatal(err)
		}
	}
	if ack := raw.report(t, success(as, nil)); ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("report after three lease TTLs of heartbeats: %v %s", ack.GetOutcome(), ack.GetError())
	}
	if got := wait(t, ts, id, 10*time.Second); got.GetState() != paddockv1.State_STATE_SUCCEEDED || len(got.GetAttempts()) != 1 {
		t.Fatalf("task: %v; want succeeded on its one attempt", got)
	}
}
