package sched_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"google.golang.org/protobuf/proto"
)

// TestLeaseSecretRequired: a second session that knows an agent's id and guesses its
// lease id (a counter) cannot ack, renew or settle that agent's task without the lease
// secret of the Assign; the refusals do not name the holder's lease or agent.
func TestLeaseSecretRequired(t *testing.T) {
	ts := startServer(t, rawAgentConfig())
	victim := dialRawAgent(t, ts, "victim", "secret.t")
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "secret.t"}).GetId()
	as := victim.assign(t) // acked with the secret
	if as.GetLeaseSecret() == "" || len(as.GetLeaseSecret()) < 32 {
		t.Fatalf("Assign.lease_secret = %q, want a random secret", as.GetLeaseSecret())
	}
	// Another agent guessing the lease: superseded, without naming the holder.
	thief := dialRawAgent(t, ts, "thief", "other.t")
	forged := success(as, nil)
	forged.LeaseSecret = ""
	ack := thief.report(t, forged)
	if ack.GetOutcome() == agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("a report by another agent was accepted")
	}
	if strings.Contains(ack.GetError(), "victim") {
		t.Fatalf("the refusal names the task's agent: %q", ack.GetError())
	}
	// The same agent id from a second session (it replaces the first), without the
	// secret: refused. (The second session registers without listing the task, so the
	// server may requeue it and lease it again, to this very session, before the report:
	// then the report's lease is no longer the task's and it is superseded instead.)
	impostor := dialRawAgent(t, ts, "victim", "secret.t")
	for _, secret := range []string{"", "0123456789abcdef0123456789abcdef"} {
		forged.LeaseSecret = secret
		ack = impostor.report(t, forged)
		if ack.GetOutcome() == agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED {
			if tk, _ := ts.srv.Store().Get(context.Background(), id); tk.LeaseID == as.GetLeaseId() && !tk.State.Terminal() && tk.State != store.Queued {
				t.Fatalf("report with lease secret %q superseded, yet the task is %s under the same lease", secret, tk.State)
			}
			continue
		}
		if ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_REJECTED || !strings.Contains(ack.GetError(), "lease_secret") {
			t.Fatalf("report with lease secret %q: %v %q; want REJECTED naming lease_secret", secret, ack.GetOutcome(), ack.GetError())
		}
	}
	tk, err := ts.srv.Store().Get(context.Background(), id)
	if err != nil || tk.State.Terminal() {
		t.Fatalf("task after forged reports: %+v, %v; want still live", tk, err)
	}
	// With the secret it is settled — unless the server has already resynced: the
	// second session of "victim" registered without listing the task, so the server may
	// have requeued it (requeueUnlisted) before this report; then the report is
	// superseded. Either way no report without the secret settled it.
	forged.LeaseSecret = as.GetLeaseSecret()
	switch ack = impostor.report(t, forged); ack.GetOutcome() {
	case agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED:
	case agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED:
		if tk, _ := ts.srv.Store().Get(context.Background(), id); tk.State != store.Queued && tk.LeaseID == as.GetLeaseId() {
			t.Fatalf("report with the secret superseded, yet the task is %s under the same lease", tk.State)
		}
	default:
		t.Fatalf("report with the secret: %v %q", ack.GetOutcome(), ack.GetError())
	}
}

// TestLeaseSecretOnBlobRPCs: ReadBlob and WriteBlob need the lease secret too.
func TestLeaseSecretOnBlobRPCs(t *testing.T) {
	cfg := rawAgentConfig()
	cfg.Blobs = openFS(t)
	ts := startServer(t, cfg)
	d := putBlob(t, cfg.Blobs, "input bytes!")
	a := dialRawAgent(t, ts, "ag", "blob.t")
	submit(t, ts, &paddockv1.TaskSpec{Type: "blob.t", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(d)}}})
	as := a.assign(t)
	if _, err := a.read("ag", as, string(d), 0); err != nil {
		t.Fatalf("read with the secret: %v", err)
	}
	noSecret := proto.Clone(as).(*agentv1.Assign)
	noSecret.LeaseSecret = ""
	if _, err := a.read("ag", noSecret, string(d), 0); err == nil || !strings.Contains(err.Error(), "lease_secret") {
		t.Fatalf("read without the secret: %v; want refused naming lease_secret", err)
	}
	if err := a.write(noSecret, "out", []byte("x"), 1); err == nil || !strings.Contains(err.Error(), "lease_secret") {
		t.Fatalf("write without the secret: %v; want refused naming lease_secret", err)
	}
}

// TestBacklogOnlyOfTheHostsTypes: a host hears the backlog of the types its pools serve
// only, however many type names clients make up.
func TestBacklogOnlyOfTheHostsTypes(t *testing.T) {
	cs := startClusterServer(t, fastConfig())
	h, err := connectHost(t, cs, "host-a", "host-a", &hostv1.Pool{Name: "p", TaskTypes: []string{"wanted"}})
	if err != nil {
		t.Fatal(err)
	}
	submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "wanted"})
	for i := range 300 {
		submit(t, cs.testServer, &paddockv1.TaskSpec{Type: fmt.Sprintf("junk-%d", i)})
	}
	waitFor(t, "a backlog of 1 wanted task sent to the host", 10*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.back["wanted"] == 1
	})
	time.Sleep(700 * time.Millisecond) // the next backlog rounds
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.back) != 1 {
		t.Fatalf("the host got the backlog of %d types, want only its pool's type \"wanted\"", len(h.back))
	}
}

// TestSpecBounds: every numeric and size field of a task spec is bounded, and the
// error names the field and the limit (timeout_ms used to wrap negative: no deadline).
func TestSpecBounds(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxInlineBytes = 1000
	ts := startServer(t, cfg)
	many := map[string]string{}
	for i := range sched.MaxLabels + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	big := map[string][]byte{} // 10 inputs of 1 byte: over 1000 bytes only with their names
	for i := range 10 {
		big[fmt.Sprintf("%0100d", i)] = []byte("0")
	}
	for _, tc := range []struct {
		name  string
		spec  *paddockv1.TaskSpec
		field string
	}{
		{"huge timeout", &paddockv1.TaskSpec{Type: "x", TimeoutMs: math.MaxInt64}, "task.timeout_ms"},
		{"8 days", &paddockv1.TaskSpec{Type: "x", TimeoutMs: (8 * 24 * time.Hour).Milliseconds()}, "task.timeout_ms"},
		{"priority", &paddockv1.TaskSpec{Type: "x", Priority: math.MaxInt32}, "task.priority"},
		{"attempts", &paddockv1.TaskSpec{Type: "x", MaxAttempts: math.MaxInt32}, "task.max_attempts"},
		{"cpu", &paddockv1.TaskSpec{Type: "x", Requirements: &paddockv1.Requirements{CpuMillis: math.MaxInt64}}, "task.requirements.cpu_millis"},
		{"memory", &paddockv1.TaskSpec{Type: "x", Requirements: &paddockv1.Requirements{MemoryBytes: math.MaxInt64}}, "task.requirements.memory_bytes"},
		{"labels", &paddockv1.TaskSpec{Type: "x", Requirements: &paddockv1.Requirements{Labels: many}}, "task.requirements.labels"},
		{"label value", &paddockv1.TaskSpec{Type: "x", Requirements: &paddockv1.Requirements{Labels: map[string]string{"k": strings.Repeat("v", 300)}}}, "task.requirements.labels"},
		{"input names count", &paddockv1.TaskSpec{Type: "x", Payload: []byte("p"), Inputs: big}, "server.max_inline_bytes"},
	} {
		err := submitErr(ts, tc.spec)
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v; want InvalidArgument naming %s", tc.name, err, tc.field)
		}
	}
	tk := submit(t, ts, &paddockv1.TaskSpec{Type: "x", TimeoutMs: sched.MaxTimeout.Milliseconds()})
	if tk.GetSpec().GetTimeoutMs() != sched.MaxTimeout.Milliseconds() {
		t.Fatalf("timeout at the limit stored as %d", tk.GetSpec().GetTimeoutMs())
	}
}

// TestAgentDeclarationLimits: an agent declaring too many types, too many slots of a
// type or in total is refused with an error naming the limit, at register and on a
// heartbeat.
func TestAgentDeclarationLimits(t *testing.T) {
	ts := startServer(t, fastConfig())
	reg := func(mod func(r *agentv1.Register)) error {
		r := &agentv1.Register{AgentId: "greedy", ProtocolVersion: sched.ProtocolVersion, Types: []*agentv1.TaskType{{Name: "t", Slots: 1}}}
		mod(r)
		_, err := dialRaw(t, ts, r)
		return err
	}
	manyTypes := func(r *agentv1.Register) {
		r.Types = nil
		for i := range 200000 / 100 { // 2000 types
			r.Types = append(r.Types, &agentv1.TaskType{Name: fmt.Sprint("t", i), Slots: 1})
		}
	}
	for _, tc := range []struct {
		name, want string
		mod        func(r *agentv1.Register)
	}{
		{"types", "sched.MaxAgentTypes", manyTypes},
		{"slots of a type", "sched.MaxTypeSlots", func(r *agentv1.Register) { r.Types[0].Slots = 100000 }},
		{"total slots", "sched.MaxTotalSlots", func(r *agentv1.Register) { r.TotalSlots = 100000 }},
	} {
		if err := reg(tc.mod); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("register with too many %s: %v; want InvalidArgument naming %s", tc.name, err, tc.want)
		}
	}
	a := dialRawAgent(t, ts, "later", "t")
	hb := &agentv1.Register{}
	manyTypes(hb)
	if err := a.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{Types: hb.GetTypes()}}}); err != nil {
		t.Fatal(err)
	}
	for range a.msgs {
	}
	if _, err := a.stream.Recv(); err == nil || !strings.Contains(err.Error(), "sched.MaxAgentTypes") {
		t.Fatalf("heartbeat with 2000 types: session ended with %v; want an error naming sched.MaxAgentTypes", err)
	}
}

// TestUnackedAssignmentsBounded: an agent that claims many slots and never reads gets
// at most MaxUnacked assignments, not every queued task.
func TestUnackedAssignmentsBounded(t *testing.T) {
	ts := startServer(t, fastConfig())
	_, err := dialRaw(t, ts, &agentv1.Register{AgentId: "sink", ProtocolVersion: sched.ProtocolVersion, TotalSlots: sched.MaxTotalSlots,
		Types: []*agentv1.TaskType{{Name: "sunk", Slots: sched.MaxTypeSlots}}})
	if err != nil {
		t.Fatal(err)
	}
	submitMany(t, ts.tasks, 2*sched.MaxUnacked, func(int) *paddockv1.TaskSpec { return &paddockv1.TaskSpec{Type: "sunk"} })
	leased := func() int64 {
		cs, _ := ts.srv.Store().Counts(context.Background())
		for _, c := range cs {
			if c.Type == "sunk" && c.State == store.Leased {
				return c.N
			}
		}
		return 0
	}
	waitFor(t, "assignments to the sink", 10*time.Second, func() bool { return leased() > 0 })
	time.Sleep(time.Second) // dispatch rounds
	if n := leased(); n > sched.MaxUnacked {
		t.Fatalf("%d tasks leased to an agent that acked none; want at most %d", n, sched.MaxUnacked)
	}
}

// TestAgentPortNeedsTokenOutsideDev: outside dev mode the server refuses to serve an
// agent port without server.agent_token; without an agent port (agents only through
// hosts) it starts.
func TestAgentPortNeedsTokenOutsideDev(t *testing.T) {
	cfg := fastConfig()
	cfg.Dev, cfg.Token = false, "client-token"
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := sched.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	al, _ := net.Listen("tcp", "127.0.0.1:0")
	cl, _ := net.Listen("tcp", "127.0.0.1:0")
	defer al.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Run(ctx, al, cl); err == nil || !strings.Contains(err.Error(), "server.agent_token") {
		t.Fatalf("Run with an agent port and no agent token: %v; want an error naming server.agent_token", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := srv.RunWith(ctx2, sched.Listeners{Client: cl}); err != nil {
		t.Fatalf("RunWith without an agent port: %v", err)
	}
}

func submitErr(ts *testServer, spec *paddockv1.TaskSpec) error {
	_, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
	return err
}

// TestRestartGraceKeepsLeases: a server (re)started long after its leases expired
// expires none of them for one lease TTL, so an agent still running its task can
// reconnect and keep it; a lease nobody renews expires after the grace.
func TestRestartGraceKeepsLeases(t *testing.T) {
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "paddock.db")
	st, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-time.Hour) // the server was down for an hour
	for _, id := range []string{"kept", "orphan"} {
		tk := store.Task{ID: id, Type: "grace.t", Class: store.Batch, MaxAttempts: 3, Tenant: "default", CreatedAt: long}
		if _, _, err := st.Create(ctx, tk); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Lease(ctx, long, []store.Grant{{TaskID: id, AgentID: "survivor", ExpiresAt: long.Add(time.Second), Secret: "secret-" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	cfg := fastConfig()
	cfg.LeaseTTL = 2 * time.Second
	ts := startServerAt(t, cfg, dbPath)
	time.Sleep(time.Second) // four sweeps
	for _, id := range []string{"kept", "orphan"} {
		if tk, _ := ts.srv.Store().Get(ctx, id); tk.State != store.Leased {
			t.Fatalf("task %s is %s one second after the start; want its lease kept during the grace", id, tk.State)
		}
	}
	if _, err := dialRaw(t, ts, &agentv1.Register{AgentId: "survivor", ProtocolVersion: sched.ProtocolVersion,
		Types:   []*agentv1.TaskType{{Name: "grace.t", Slots: 1}},
		Running: []*agentv1.RunningTask{{TaskId: "kept", LeaseId: 1, LeaseSecret: "secret-kept"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the orphan's lease expired after the grace", 10*time.Second, func() bool {
		tk, _ := ts.srv.Store().Get(ctx, "orphan")
		return tk.State == store.Queued
	})
	if tk, _ := ts.srv.Store().Get(ctx, "kept"); tk.State != store.Leased {
		t.Fatalf("the reconnected agent's task is %s; want still leased", tk.State)
	}
}

// TestStalledUploads: 150 API uploads of 9 MiB that stall one byte before their end do
// not grow the server by their size: unauthenticated, the token is checked before the
// body is read; authenticated, the bytes of bodies being read at once are bounded
// (MinClientBodyBudget). The growth of this process's RSS (server and clients are in
// it; the clients write from one shared buffer) is logged and bounded.
func TestStalledUploads(t *testing.T) {
	cfg := fastConfig()
	cfg.Dev, cfg.Token, cfg.AgentToken = false, "client-token", "agent-token"
	ts := startServer(t, cfg)
	for _, tc := range []struct {
		name, auth string
		limit      int64
	}{
		{"unauthenticated", "", 100 << 20},
		{"authenticated", "Authorization: Bearer client-token\r\n", sched.MinClientBodyBudget + 100<<20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grew := stalledUploads(t, ts, tc.auth, 150, 9<<20)
			t.Logf("RSS grew by %d MiB with 150 stalled %s 9 MiB uploads open", grew>>20, tc.name)
			if grew > tc.limit {
				t.Fatalf("RSS grew by %d MiB with 150 stalled %s uploads; want at most %d MiB", grew>>20, tc.name, tc.limit>>20)
			}
		})
	}
	// An authenticated call works again once the stalled uploads are gone (their
	// connections are closed; the server frees their budget as it notices, at the
	// latest at the 30 s progress deadline).
	c := paddockv1connect.NewTaskServiceClient(http.DefaultClient, ts.url, connect.WithInterceptors(bearer(cfg.Token)))
	var err error
	for end := time.Now().Add(45 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if _, err = c.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "x"}})); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("a submit after the stalled uploads ended: %v", err)
	}
}

// stalledUploads opens conns Submit calls with auth (a header line or "") of size
// bytes each, sends all but the last byte (or until the server stops reading), and
// returns how much this process's RSS grew while they are open.
func stalledUploads(t *testing.T, ts *testServer, auth string, conns, size int) int64 {
	addr := strings.TrimPrefix(ts.url, "http://")
	runtime.GC()
	debug.FreeOSMemory()
	before := rssBytes(t)
	chunk := make([]byte, 1<<20)
	var wg sync.WaitGroup
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(c, "POST /paddock.v1.TaskService/Submit HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/proto\r\nContent-Length: %d\r\n\r\n", auth, size)
			c.SetWriteDeadline(time.Now().Add(5 * time.Second)) // a server not reading stalls the writes
			for left := size - 1; left > 0; {
				n, err := c.Write(chunk[:min(left, len(chunk))])
				if err != nil {
					return // refused, or not read on
				}
				left -= n
			}
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	debug.FreeOSMemory()
	return rssBytes(t) - before
}

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestBlobReferenceRefreshesRetention: a client's HEAD of an old blob, or a PUT of one
// that exists (the upload skipped), refreshes its retention clock: retention does not
// delete it before the client's submit naming it, but does once the retention passed.
func TestBlobReferenceRefreshesRetention(t *testing.T) {
	cfg := fastConfig()
	fs := openFS(t)
	cfg.Blobs = fs
	ts := startServer(t, cfg)
	ctx := context.Background()
	headed, reput := putBlob(t, fs, "found by HEAD"), putBlob(t, fs, "put again")
	old := time.Now().Add(-72 * time.Hour)
	for _, d := range []blob.Digest{headed, reput} {
		if err := os.Chtimes(fs.Path(d), old, old); err != nil { // written long ago
			t.Fatal(err)
		}
	}
	cl := blobhttp.Client{BaseURL: ts.url}
	if _, err := cl.Stat(ctx, headed); err != nil {
		t.Fatal(err)
	}
	if _, uploaded, err := cl.Put(ctx, reput, strings.NewReader("put again"), 9, nil); err != nil || uploaded {
		t.Fatalf("PUT of an existing blob: uploaded %v, %v; want skipped", uploaded, err)
	}
	if n, err := ts.srv.CollectGarbage(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("CollectGarbage just after the HEAD and PUT = %d, %v; want nothing deleted", n, err)
	}
	if n, err := ts.srv.CollectGarbage(ctx, time.Now().Add(48*time.Hour)); err != nil || n != 2 {
		t.Fatalf("CollectGarbage 48h later = %d, %v; want both deleted", n, err)
	}
}

// TestMetricTypeLabelsBounded: clients choose task type names; /metrics carries at most
// MaxMetricTypes of them as label values and counts the rest under "other".
func TestMetricTypeLabelsBounded(t *testing.T) {
	ts := startServer(t, fastConfig())
	n := sched.MaxMetricTypes + 50
	spec := func(i int) *paddockv1.TaskSpec { return &paddockv1.TaskSpec{Type: fmt.Sprintf("made-up-%d", i)} }
	ids := submitMany(t, ts.tasks, n, spec)
	for _, id := range ids { // terminal: task_duration_seconds gets a series per type too
		if _, err := ts.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: id})); err != nil {
			t.Fatal(err)
		}
	}
	submitMany(t, ts.tasks, n, spec) // queued: paddock_tasks counts live tasks only
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, metric := range []string{"paddock_tasks{", "paddock_task_duration_seconds_count{"} {
		types := map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, metric) {
				continue
			}
			if i := strings.Index(line, `type="`); i >= 0 {
				rest := line[i+6:]
				types[rest[:strings.IndexByte(rest, '"')]] = true
			}
		}
		if len(types) > sched.MaxMetricTypes+1 || !types["other"] {
			t.Errorf("%s has %d type label values (other: %v); want at most %d and \"other\"", metric, len(types), types["other"], sched.MaxMetricTypes+1)
		}
	}
}

// TestIdleAgentConnectionClosed: an agent-port connection that never starts an RPC is
// closed after AgentIdleTimeout (it used to stay open for ever).
func TestIdleAgentConnectionClosed(t *testing.T) {
	cfg := fastConfig()
	cfg.AgentIdleTimeout = 300 * time.Millisecond
	ts := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := session.TCPDialer(ts.agentAddr)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	used := false
	cc, err := grpc.NewClient("passthrough:///paddock-server", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used {
				return nil, errors.New("dials once")
			}
			used = true
			return conn, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("the connection never got ready (%v)", s)
		}
	}
	start := time.Now()
	if !cc.WaitForStateChange(ctx, connectivity.Ready) {
		t.Fatalf("an idle agent-port connection was still open after %v; want it closed after %v", time.Since(start).Round(time.Millisecond), cfg.AgentIdleTimeout)
	}
	t.Logf("idle connection closed after %v (state %v)", time.Since(start).Round(time.Millisecond), cc.GetState())
}

// TestReconnectRequeuesUndeliveredAssignments: an assignment whose session broke
// before the agent got it (or that the server dropped with the session when its send
// buffer was full) is requeued as soon as the agent reconnects without it, not after
// the lease TTL.
func TestReconnectRequeuesUndeliveredAssignments(t *testing.T) {
	cfg := fastConfig()
	cfg.LeaseTTL = 20 * time.Second
	ts := startServer(t, cfg)
	reg := &agentv1.Register{AgentId: "flaky", ProtocolVersion: sched.ProtocolVersion, Types: []*agentv1.TaskType{{Name: "lost.t", Slots: 1}}}
	first, err := dialRaw(t, ts, reg)
	if err != nil {
		t.Fatal(err)
	}
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "lost.t"}).GetId()
	for m := range first.msgs { // assigned, but the agent "never got it": no ack
		if m.GetAssign().GetTaskId() == id {
			break
		}
	}
	start := time.Now()
	if _, err := dialRaw(t, ts, reg); err != nil { // reconnects, running nothing
		t.Fatal(err)
	}
	waitFor(t, "the undelivered assignment's attempt ended", 5*time.Second, func() bool {
		att, _ := ts.srv.Store().Attempts(context.Background(), id)
		return len(att) > 0 && att[0].State != store.Running
	})
	att, _ := ts.srv.Store().Attempts(context.Background(), id)
	if !strings.Contains(att[0].Error, "reconnected without the task") {
		t.Fatalf("first attempt = %+v; want ended because the agent reconnected without it", att[0])
	}
	t.Logf("requeued %v after the reconnect (lease TTL %v)", time.Since(start).Round(time.Millisecond), cfg.LeaseTTL)
}

// TestStaleAckNotRefused: an ack with a wrong secret for a lease the agent holds is a
// refusal (counted, warned); an ack for a lease that has ended — usual after a
// reconnect — is ignored without counting as one.
func TestStaleAckNotRefused(t *testing.T) {
	ts := startServer(t, rawAgentConfig())
	a := dialRawAgent(t, ts, "acker", "ack.t")
	refused := func() int {
		return int(metricSum(t, ts, "paddock_agent_sessions_refused_total{", `reason="lease_secret"`))
	}
	sendAck := func(as *agentv1.Assign, secret string) {
		t.Helper()
		if err := a.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: &agentv1.Ack{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: secret, Accepted: true}}}); err != nil {
			t.Fatal(err)
		}
	}
	waitRefused := func(n int) {
		t.Helper()
		for end := time.Now().Add(time.Minute); refused() < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("refusals = %d, want %d", refused(), n)
			}
		}
		if got := refused(); got != n {
			t.Fatalf("refusals = %d, want %d", got, n)
		}
	}
	submit(t, ts, &paddockv1.TaskSpec{Type: "ack.t"})
	first := a.assign(t)
	sendAck(first, "0123456789abcdef0123456789abcdef")
	waitRefused(1)
	if ack := a.report(t, success(first, nil)); ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("report: %v %q", ack.GetOutcome(), ack.GetError())
	}
	// The lease has ended: acks for it, with or without its secret, are stale.
	sendAck(first, first.GetLeaseSecret())
	sendAck(first, "")
	submit(t, ts, &paddockv1.TaskSpec{Type: "ack.t"})
	second := a.assign(t)
	sendAck(second, "") // processed after the stale ones: the count moves to 2, not 4
	waitRefused(2)
}
