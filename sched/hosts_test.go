package sched_test

import (
	"context"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddockvm/paddock/agent/session"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/hostd/link"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// clusterServer is a testServer with a cluster port (mutual TLS from a dev CA).
type clusterServer struct {
	*testServer
	clusterAddr string
	pkiDir      string
}

func startClusterServer(t testing.TB, cfg sched.Config) *clusterServer {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sched.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.DevServerTLS(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	var ls [3]net.Listener
	for i := range ls {
		if ls[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.RunWith(ctx, sched.Listeners{Agent: ls[0], Client: ls[1], Cluster: ls[2], ClusterTLS: tlsCfg}); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; st.Close() }) }
	t.Cleanup(stop)
	url := "http://" + ls[1].Addr().String()
	return &clusterServer{
		testServer: &testServer{srv: srv, agentAddr: ls[0].Addr().String(), url: url, stop: stop,
			tasks:   paddockv1connect.NewTaskServiceClient(http.DefaultClient, url),
			cluster: paddockv1connect.NewClusterServiceClient(http.DefaultClient, url)},
		clusterAddr: ls[2].Addr().String(), pkiDir: filepath.Join(dir, "pki"),
	}
}

// fakeHost is a host daemon's control side, driven by the test.
type fakeHost struct {
	cc     *grpc.ClientConn
	client hostv1.HostServiceClient
	ctl    hostv1.HostService_ControlClient
	mu     sync.Mutex
	events []*hostv1.TaskEvent
	back   map[string]int64
	snaps  []*hostv1.TaskSnapshot
	ended  error // why the control stream ended (nil while it runs)
}

func connectHost(t *testing.T, cs *clusterServer, certID, regID string, pools ...*hostv1.Pool) (*fakeHost, error) {
	t.Helper()
	return connectHostWith(t, cs, certID, regID, hostOpts{}, pools...)
}

// hostOpts are a fake host's capabilities and its handler of server messages (run on
// the control stream's receiving goroutine, after the message is recorded).
type hostOpts struct {
	caps    []string
	statsMs uint32 // Register.stats_interval_ms
	handle  func(h *fakeHost, m *hostv1.ServerMessage)
}

func connectHostWith(t testing.TB, cs *clusterServer, certID, regID string, o hostOpts, pools ...*hostv1.Pool) (*fakeHost, error) {
	t.Helper()
	tlsCfg, err := pki.DevHostTLS(cs.pkiDir, certID)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := link.Dial(cs.clusterAddr, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	h := &fakeHost{cc: cc, client: hostv1.NewHostServiceClient(cc)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.ctl, err = h.client.Control(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.ctl.Send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Register{Register: &hostv1.Register{
		HostId: regID, ProtocolVersion: 1, Version: "test", Accel: "tcg", Capacity: &hostv1.Capacity{Cpus: 2, MemoryBytes: 1 << 30}, Pools: pools, Capabilities: o.caps, StatsIntervalMs: o.statsMs}}}); err != nil {
		t.Fatal(err)
	}
	m, err := h.ctl.Recv()
	if err != nil {
		return nil, err
	}
	if m.GetRegistered() == nil {
		t.Fatalf("first control message %v, want registered", m)
	}
	go func() {
		for {
			m, err := h.ctl.Recv()
			if err != nil {
				h.mu.Lock()
				h.ended = err
				h.mu.Unlock()
				return
			}
			h.mu.Lock()
			if sn := m.GetTaskSnapshot(); sn != nil {
				h.snaps = append(h.snaps, sn)
			}
			if e := m.GetTaskEvent(); e != nil {
				h.events = append(h.events, e)
			}
			if b := m.GetBacklog(); b != nil {
				h.back = b.GetQueued()
			}
			h.mu.Unlock()
			if o.handle != nil {
				o.handle(h, m)
			}
		}
	}()
	return h, nil
}

func (h *fakeHost) send(t *testing.T, m *hostv1.HostMessage) {
	t.Helper()
	if err := h.ctl.Send(m); err != nil {
		t.Fatal(err)
	}
}

func (h *fakeHost) eventsFor(guest string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, e := range h.events {
		if e.GetGuest() == guest {
			out = append(out, strings.TrimPrefix(e.GetKind().String(), "KIND_")+":"+e.GetTaskId())
		}
	}
	return out
}

// startGuestAgent runs an in-process agent whose sessions are relayed by h as guest.
func startGuestAgent(t *testing.T, h *fakeHost, guest, pool, claim string, ex session.Executor, mods ...func(*session.Config)) *session.Session {
	t.Helper()
	cfg := session.Config{AgentID: claim, Host: "liar", ReconnectMin: 20 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
		Dial: func(ctx context.Context) (net.Conn, error) { return link.OpenRelay(ctx, h.client, guest, pool) }}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := session.New(cfg, ex)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func agentState(t *testing.T, ts *testServer, id string) *paddockv1.Agent {
	r, err := ts.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range r.Msg.GetAgents() {
		if a.GetId() == id {
			return a
		}
	}
	return nil
}

func sleepExec() *fakeExec {
	return &fakeExec{types: []session.TaskType{{Name: "sleep", Concurrency: 4}}, fn: func(ctx context.Context, t session.Task) session.Result {
		d, _ := time.ParseDuration(string(t.Payload))
		select {
		case <-time.After(d):
			return session.Result{Output: []byte("slept")}
		case <-ctx.Done():
			return session.Result{Error: "cancelled"}
		}
	}}
}

func TestHostRegisterNeedsItsCertificateID(t *testing.T) {
	cs := startClusterServer(t, fastConfig())
	_, err := connectHost(t, cs, "host-a", "host-b")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "host.id") {
		t.Fatalf("register as host-b with host-a's certificate: got %v, want PermissionDenied naming host.id", err)
	}
}

// TestRelayedGuestNeedsNoAgentToken: server.agent_token binds TCP agents; a guest relayed
// by an authenticated host registers without it.
func TestRelayedGuestNeedsNoAgentToken(t *testing.T) {
	cfg := fastConfig()
	cfg.AgentToken = "agent-secret"
	cs := startClusterServer(t, cfg)
	h, err := connectHost(t, cs, "host-a", "host-a", &hostv1.Pool{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	startGuestAgent(t, h, "g1", "p", "g1", sleepExec())
	waitFor(t, "relayed g1 connected without an agent token", 10*time.Second, func() bool {
		a := agentState(t, cs.testServer, "g1")
		return a != nil && a.GetState() == "connected"
	})
	startAgent(t, cs.testServer, "tcp-1", sleepExec())
	time.Sleep(500 * time.Millisecond)
	if agentState(t, cs.testServer, "tcp-1") != nil {
		t.Fatal("a TCP agent without the agent token got a session")
	}
}

func TestRelayedGuestIdentityAndEvents(t *testing.T) {
	cfg := fastConfig()
	cfg.LeaseTTL = time.Minute // a requeue below must come from GuestGone, not expiry
	cs := startClusterServer(t, cfg)
	h, err := connectHost(t, cs, "host-a", "host-a", &hostv1.Pool{Name: "p", MaxTasksPerVm: 0})
	if err != nil {
		t.Fatal(err)
	}
	startGuestAgent(t, h, "g1", "p", "g1", sleepExec())
	waitFor(t, "g1 connected", 10*time.Second, func() bool { a := agentState(t, cs.testServer, "g1"); return a != nil && a.GetState() == "connected" })
	g1 := agentState(t, cs.testServer, "g1")
	if g1.GetHost() != "host-a" {
		t.Errorf("g1's host = %q, want the attested host-a (not the agent's claim)", g1.GetHost())
	}

	// A guest relayed as g2 that claims to be g1 is refused; g1 is untouched.
	rogue := startGuestAgent(t, h, "g2", "p", "g1", sleepExec())
	time.Sleep(500 * time.Millisecond)
	if rogue.Stats().Connected {
		t.Fatal("the rogue guest (attested g2, claiming g1) got a session")
	}
	after := agentState(t, cs.testServer, "g1")
	if after.GetState() != "connected" || after.GetConnectedAtUnixMs() != g1.GetConnectedAtUnixMs() {
		t.Fatalf("g1 changed after the rogue's attempts: before %v, after %v", g1, after)
	}
	if agentState(t, cs.testServer, "g2") != nil {
		t.Fatal("the rogue registered something under g2")
	}
	// So is a TCP agent on the agent port claiming g1.
	tcp := startAgent(t, cs.testServer, "g1", sleepExec())
	time.Sleep(300 * time.Millisecond)
	tcp()
	if a := agentState(t, cs.testServer, "g1"); a.GetHost() != "host-a" || a.GetConnectedAtUnixMs() != g1.GetConnectedAtUnixMs() {
		t.Fatalf("a TCP agent claiming g1 changed it: %v", a)
	}

	// A task on g1: the host hears STARTED then FINISHED.
	task := submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "sleep", Payload: []byte("50ms")})
	if got := wait(t, cs.testServer, task.GetId(), 10*time.Second); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("task: %v", got)
	}
	waitFor(t, "events for g1", 5*time.Second, func() bool { return len(h.eventsFor("g1")) == 2 })
	if ev := h.eventsFor("g1"); ev[0] != "STARTED:"+task.GetId() || ev[1] != "FINISHED:"+task.GetId() {
		t.Fatalf("events %v", ev)
	}

	// Guest gone with a task running: requeued at once (lease TTL is a minute) and run on g3.
	long := submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "sleep", Payload: []byte("1s"), MaxAttempts: 3})
	waitFor(t, "the long task running on g1", 5*time.Second, func() bool { return len(h.eventsFor("g1")) == 3 })
	// g3's agent reports its memory in every heartbeat (vm ls shows it below).
	startGuestAgent(t, h, "g3", "p", "g3", sleepExec(), func(c *session.Config) {
		c.Memory = func() session.Memory {
			return session.Memory{GuestUsed: 100 << 20, AgentRSS: 9 << 20, AgentAnon: 3 << 20, HandlersRSS: 12 << 20, HandlersUp: 1}
		}
	})
	gone := time.Now()
	h.send(t, &hostv1.HostMessage{Msg: &hostv1.HostMessage_GuestGone{GuestGone: &hostv1.GuestGone{Name: "g1", Pool: "p", Reason: "destroyed"}}})
	got := wait(t, cs.testServer, long.GetId(), 20*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || got.GetAgentId() != "g3" || time.Since(gone) > 15*time.Second {
		t.Fatalf("after g1 gone: %v (in %v)", got, time.Since(gone))
	}
	if att := got.GetAttempts(); len(att) != 2 || att[0].GetFailureKind() != paddockv1.FailureKind_FAILURE_KIND_GUEST_GONE {
		t.Fatalf("attempts after g1 gone: %v; want the first ended as guest_gone", att)
	}
	if g := agentState(t, cs.testServer, "g1"); g.GetState() == "connected" {
		t.Fatalf("g1 still connected after its host reported it gone: %v", g)
	}

	// Status feeds vm ls and host ls.
	h.send(t, &hostv1.HostMessage{Msg: &hostv1.HostMessage_Status{Status: &hostv1.Status{
		Load:   &hostv1.Load{CpuPercent: 12.5, MemAvailableBytes: 1 << 29, TransferBytesPerSec: 45e6, TransferCapacityBytesPerSec: 90e6, Transfers: 2},
		Guests: []*hostv1.Guest{{Name: "g3", Pool: "p", State: "idle", TasksRun: 1, CreatedAtUnixMs: time.Now().Add(-time.Minute).UnixMilli(), RssBytes: 150 << 20}}}}})
	waitFor(t, "vm ls shows g3", 5*time.Second, func() bool {
		r, err := cs.cluster.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
		return err == nil && len(r.Msg.GetVms()) == 1 && r.Msg.GetVms()[0].GetAgent() == "connected" && r.Msg.GetVms()[0].GetUptimeMs() >= 59000
	})
	vms, err := cs.cluster.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if vm := vms.Msg.GetVms()[0]; vm.GetRssBytes() != 150<<20 || vm.GetAgentRssBytes() != 9<<20 || vm.GetHandlersRssBytes() != 12<<20 || vm.GetHandlersUp() != 1 || vm.GetAgentAnonBytes() != 3<<20 {
		t.Fatalf("vm ls: host RSS %d, agent RSS %d, handlers RSS %d (%d up); want the host's 150 MiB and the agent's heartbeat 9 MiB, 12 MiB (1 up)",
			vm.GetRssBytes(), vm.GetAgentRssBytes(), vm.GetHandlersRssBytes(), vm.GetHandlersUp())
	}
	hr, err := cs.cluster.ListHosts(context.Background(), connect.NewRequest(&paddockv1.ListHostsRequest{}))
	if err != nil || len(hr.Msg.GetHosts()) != 1 || hr.Msg.GetHosts()[0].GetCpuPercent() != 12.5 || hr.Msg.GetHosts()[0].GetState() != "connected" {
		t.Fatalf("host ls: %v %v", hr, err)
	}
	if h := hr.Msg.GetHosts()[0]; h.GetTransferBytesPerSec() != 45e6 || h.GetTransferCapacityBytesPerSec() != 90e6 {
		t.Errorf("host ls: link use %v of %v bytes/s, want the host's 45e6 of 90e6", h.GetTransferBytesPerSec(), h.GetTransferCapacityBytesPerSec())
	}
}

func TestMaxTasksPerGuestAndBacklog(t *testing.T) {
	cs := startClusterServer(t, fastConfig())
	h, err := connectHost(t, cs, "host-a", "host-a", &hostv1.Pool{Name: "one", MaxTasksPerVm: 1, TaskTypes: []string{"sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	startGuestAgent(t, h, "one-1", "one", "one-1", sleepExec())
	waitFor(t, "one-1 connected", 10*time.Second, func() bool {
		a := agentState(t, cs.testServer, "one-1")
		return a != nil && a.GetState() == "connected"
	})
	var ids []string
	for range 3 {
		ids = append(ids, submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "sleep", Payload: []byte("10ms")}).GetId())
	}
	wait(t, cs.testServer, ids[0], 10*time.Second) // one of them, at least, runs
	time.Sleep(700 * time.Millisecond)
	if ev := h.eventsFor("one-1"); len(ev) != 2 {
		t.Fatalf("a guest of a max_tasks_per_vm 1 pool got events %v, want one task started and finished", ev)
	}
	waitFor(t, "backlog of 2 sleep tasks sent to the host", 10*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.back["sleep"] == 2
	})
}

// snapshots returns the TaskSnapshots h received, and why its stream ended.
func (h *fakeHost) snapshots() ([]*hostv1.TaskSnapshot, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*hostv1.TaskSnapshot(nil), h.snaps...), h.ended
}

// TestHostLinkOverflowResyncs: a host's control stream whose send buffer overflows
// (the sender is stalled, the buffer holds 2, four tasks start on its guest) is closed
// by the server; the host registers again and gets a TaskSnapshot listing exactly the
// leases its guest holds, with the guest's assigned count; the TaskEvents after it
// arrive on the new stream.
func TestHostLinkOverflowResyncs(t *testing.T) {
	defer sched.SetHostLinkBuffer(2)()
	cs := startClusterServer(t, fastConfig())
	h1, err := connectHost(t, cs, "host-a", "host-a", &hostv1.Pool{Name: "p", TaskTypes: []string{"sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	startGuestAgent(t, h1, "g1", "p", "g1", sleepExec())
	waitFor(t, "g1 connected", 10*time.Second, func() bool { a := agentState(t, cs.testServer, "g1"); return a != nil && a.GetState() == "connected" })
	waitFor(t, "the first stream's snapshot", 5*time.Second, func() bool { s, _ := h1.snapshots(); return len(s) == 1 })
	if s, _ := h1.snapshots(); len(s[0].GetRunning()) != 0 {
		t.Fatalf("first snapshot %v, want no leases", s[0])
	}

	release := make(chan struct{})
	sched.HoldHostLinks(func() { <-release })
	defer sched.HoldHostLinks(nil)
	want := map[string]bool{}
	for range 4 {
		want[submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "sleep", Payload: []byte("1h")}).GetId()] = true
	}
	// A task is running once its agent has its assignment, which is sent after its
	// TaskEvent is queued.
	waitFor(t, "four tasks running on g1", 10*time.Second, func() bool {
		for id := range want {
			r, err := cs.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
			if err != nil || r.Msg.GetTask().GetState() != paddockv1.State_STATE_RUNNING {
				return false
			}
		}
		return true
	})
	sched.HoldHostLinks(nil)
	close(release)
	waitFor(t, "the server closing the overflowing stream", 10*time.Second, func() bool { _, err := h1.snapshots(); return err != nil })
	if _, err := h1.snapshots(); !strings.Contains(err.Error(), "send buffer full") {
		t.Errorf("stream ended with %v, want the overflow named", err)
	}
	if n := len(h1.eventsFor("g1")); n >= 4 {
		t.Fatalf("the stalled stream delivered %d events: no overflow was forced", n)
	}

	h2, err := connectHost(t, cs, "host-a", "host-a", &hostv1.Pool{Name: "p", TaskTypes: []string{"sleep"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new stream's snapshot", 5*time.Second, func() bool { s, _ := h2.snapshots(); return len(s) == 1 })
	snap, _ := h2.snapshots()
	got := map[string]bool{}
	for _, e := range snap[0].GetRunning() {
		if e.GetGuest() != "g1" || e.GetKind() != hostv1.TaskEvent_KIND_STARTED || e.GetLeaseId() == 0 {
			t.Errorf("snapshot lease %v, want KIND_STARTED on g1 with a lease", e)
		}
		got[e.GetTaskId()] = true
	}
	if len(got) != 4 || !maps.Equal(got, want) {
		t.Fatalf("snapshot leases %v, want the four running tasks %v", got, want)
	}
	if n := snap[0].GetAssigned()["g1"]; n != 4 {
		t.Errorf("snapshot assigned[g1] = %d, want 4", n)
	}

	// Events flow on the new stream: a cancelled task's lease ends.
	var victim string
	for id := range want {
		victim = id
		break
	}
	if _, err := cs.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: victim})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "FINISHED on the new stream", 10*time.Second, func() bool {
		return slices.Contains(h2.eventsFor("g1"), "FINISHED:"+victim)
	})
}
