package hostd_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/hostd"
	"github.com/paddockvm/paddock/hostd/cache"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/internal/pki"
	itest "github.com/paddockvm/paddock/internal/testutil"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

const bootWait = 4 * time.Minute

// handlerName is the image's one handler, under its real name: the test handler serves
// test.sleep, test.echo, … (the image manifest records them), and pools declare the task
// types they scale for.
const handlerName = "testhandler"

var shared struct {
	once       sync.Once
	dir        string
	agent, th  string
	store      *images.Store
	img        images.Image
	err        error
	cleanupDir []string
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChildDaemon())
	}
	code := m.Run()
	for _, d := range shared.cleanupDir {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func qemuDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return errors.New("go build " + pkg + ": " + err.Error() + ": " + string(b))
	}
	return nil
}

// realImage builds (once) the real paddock-agent and the test handler with
// CGO_ENABLED=0 and an image of them on the host's kernel.
func realImage(t testing.TB) (*images.Store, images.Image) {
	t.Helper()
	itest.RequireKernel(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "paddock-hostd-img-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			shared.err = err
			return
		}
		shared.dir = dir
		shared.cleanupDir = append(shared.cleanupDir, dir)
		shared.agent, shared.th = filepath.Join(dir, "paddock-agent"), filepath.Join(dir, "testhandler")
		if shared.err = goBuild(shared.agent, "github.com/paddockvm/paddock/cmd/paddock-agent"); shared.err != nil {
			return
		}
		if shared.err = goBuild(shared.th, "github.com/paddockvm/paddock/plugins/handlers/testhandler"); shared.err != nil {
			return
		}
		if shared.store, shared.err = images.Open(filepath.Join(dir, "store")); shared.err != nil {
			return
		}
		shared.img, shared.err = shared.store.Build(context.Background(), images.Spec{Agent: shared.agent, Handlers: []images.Handler{{Name: handlerName, Path: shared.th}}})
	})
	if shared.err != nil {
		t.Fatalf("building the test image: %v", shared.err)
	}
	return shared.store, shared.img
}

// logBuf collects logs for assertions and failure messages.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is a real server (in-process, SQLite file, cluster port with a dev CA) and a
// real host daemon on real libvirt.
type env struct {
	t       testing.TB
	uri     string
	hv      *hypervisor.Libvirt
	srv     *sched.Server
	tasks   paddockv1connect.TaskServiceClient
	cluster paddockv1connect.ClusterServiceClient
	d       *hostd.Daemon
	hostID  string
	pkiDir  string
	logs    *logBuf
	img     images.Image
	store   *images.Store
	runDir  string
	blobs   *blob.FS // the server's blob store (options.dataPlane)
	// leaseTTL is the server's lease_ttl (default 30s).
	leaseTTL time.Duration
	// sessionTimeout is the daemon's guest_session_timeout (default vmpool's).
	sessionTimeout time.Duration
	// proxy carries the daemon's connection to the server (options.proxy).
	proxy *tcpProxy
}

// options configure start.
type options struct {
	pools []vmpool.PoolConfig // their Image fields "" get the test image's digest
	th    hostload.Thresholds
	// img builds the image (default realImage).
	img func(testing.TB) (*images.Store, images.Image)
	// dataPlane gives the server a filesystem blob store and the host a cache (so it
	// registers the capability stage and its guests get shared directories).
	dataPlane bool
	// sessionTimeout is the host's guest_session_timeout (0: the default).
	sessionTimeout time.Duration
	// proxy puts a tcpProxy (env.proxy) between the host daemon and the cluster port.
	proxy bool
}

func connectLibvirt(t testing.TB) (*hypervisor.Libvirt, string) {
	uri := itest.RequireLibvirt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hv, err := hypervisor.Connect(ctx, hypervisor.Config{URI: uri, Prefix: "paddock-", Accel: hypervisor.AccelTCG},
		hypervisor.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("connecting to libvirt at %s: %v", uri, err)
	}
	t.Cleanup(func() { hv.Close() })
	return hv, uri
}

func startServer(t testing.TB, e *env, withBlobs bool) string {
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("side", "server")
	ttl := e.leaseTTL
	if ttl == 0 {
		ttl = 30 * time.Second
	}
	cfg := sched.Config{Dev: true, HeartbeatInterval: 500 * time.Millisecond, LeaseTTL: ttl,
		RetryBase: 100 * time.Millisecond, RetryMax: time.Second, Logger: log}
	if withBlobs {
		if e.blobs, err = blob.OpenFS(filepath.Join(dir, "blobs")); err != nil {
			t.Fatal(err)
		}
		cfg.Blobs = e.blobs
	}
	e.srv, err = sched.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	e.pkiDir = filepath.Join(dir, "pki")
	tlsCfg, err := pki.DevServerTLS(e.pkiDir)
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
		if err := e.srv.RunWith(ctx, sched.Listeners{Agent: ls[0], Client: ls[1], Cluster: ls[2], ClusterTLS: tlsCfg}); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	url := "http://" + ls[1].Addr().String()
	e.tasks = paddockv1connect.NewTaskServiceClient(http.DefaultClient, url)
	e.cluster = paddockv1connect.NewClusterServiceClient(http.DefaultClient, url)
	return ls[2].Addr().String()
}

// start runs the server and a host daemon with pools (their Image fields "" get the
// test image's digest) and thresholds.
func start(t testing.TB, pools []vmpool.PoolConfig, th hostload.Thresholds) *env {
	t.Helper()
	return startWith(t, options{pools: pools, th: th})
}

// startWith runs the server and a host daemon as o says.
func startWith(t testing.TB, o options) *env {
	t.Helper()
	pools, th := o.pools, o.th
	if o.img == nil {
		o.img = realImage
	}
	hv, uri := connectLibvirt(t)
	store, img := o.img(t)
	e := &env{t: t, uri: uri, hv: hv, hostID: "hostd-test-" + randHex(3), logs: &logBuf{}, img: img, store: store, sessionTimeout: o.sessionTimeout}
	clusterAddr := startServer(t, e, o.dataPlane)
	if o.proxy {
		e.proxy = startProxy(t, clusterAddr)
		clusterAddr = e.proxy.addr()
	}
	for i := range pools {
		if pools[i].Image == "" {
			pools[i].Image = img.Digest[:16]
		}
	}
	e.runDir = qemuDir(t, "pdhd-")
	t.Cleanup(func() { os.RemoveAll(e.runDir) })
	e.startDaemon(clusterAddr, pools, th, o.dataPlane)
	return e
}

// startDaemon runs a host daemon of e.hostID on e.runDir against the server at
// clusterAddr, and stops it (checking that no guest survives it) at cleanup.
func (e *env) startDaemon(clusterAddr string, pools []vmpool.PoolConfig, th hostload.Thresholds, dataPlane bool) {
	t, hv, store := e.t, e.hv, e.store
	t.Helper()
	tlsCfg, err := pki.DevHostTLS(e.pkiDir, e.hostID)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("side", "host")
	hcfg := hostd.Config{Server: clusterAddr, TLS: tlsCfg, LoadInterval: 500 * time.Millisecond, Accel: "tcg", Version: "test", Logger: log,
		Pools: vmpool.Config{HostID: e.hostID, RunDir: e.runDir, Pools: pools, Tick: 200 * time.Millisecond, StatsInterval: time.Second, Thresholds: th,
			GuestSessionTimeout: e.sessionTimeout}}
	if dataPlane {
		// The cache next to the guests' directories: the same filesystem, so staging
		// hard-links.
		hcfg.Cache = cache.DefaultConfig()
		hcfg.Cache.Dir = qemuDir(t, "pdhc-")
		t.Cleanup(func() { os.RemoveAll(hcfg.Cache.Dir) })
	}
	e.d, err = hostd.New(hcfg, hv, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon Run: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Errorf("daemon Run did not return after cancel")
		}
		doms, _ := hv.List(context.Background())
		for _, d := range doms {
			if d.Labels[vmpool.LabelHost] == e.hostID {
				t.Errorf("guest %s survived the daemon", d.Name)
				hv.Destroy(context.Background(), d.Name)
			}
		}
		if t.Failed() {
			t.Logf("logs:\n%s", e.logs.String())
		}
	})
}

func (e *env) waitFor(what string, within time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s; guests %+v; pools %+v", within, what, e.d.Manager().Snapshot(), e.d.Manager().Pools())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) vms() []*paddockv1.VM {
	r, err := e.cluster.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Msg.GetVms()
}

func (e *env) agents() map[string]*paddockv1.Agent {
	r, err := e.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]*paddockv1.Agent{}
	for _, a := range r.Msg.GetAgents() {
		out[a.GetId()] = a
	}
	return out
}

// registered returns the pool's guests whose agents are connected.
func (e *env) registered(pool string) []string {
	ags := e.agents()
	var out []string
	for _, g := range e.d.Manager().Snapshot() {
		if a := ags[g.Name]; g.Pool == pool && a != nil && a.GetState() == "connected" && g.State != vmpool.StateStopping {
			out = append(out, g.Name)
		}
	}
	return out
}

func (e *env) guests(pool string) []vmpool.GuestInfo {
	var out []vmpool.GuestInfo
	for _, g := range e.d.Manager().Snapshot() {
		if g.Pool == pool && g.State != vmpool.StateStopping {
			out = append(out, g)
		}
	}
	return out
}

func (e *env) submit(typ, payload string) string {
	r, err := e.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: typ, Payload: []byte(payload), MaxAttempts: 5}}))
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Msg.GetTask().GetId()
}

func (e *env) wait(id string, d time.Duration) *paddockv1.Task {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r, err := e.tasks.Wait(context.Background(), connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: 60000}))
		if err != nil {
			e.t.Fatal(err)
		}
		if r.Msg.GetTerminal() {
			return r.Msg.GetTask()
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("task %s not terminal after %v: %v", id, d, r.Msg.GetTask())
		}
	}
}

func (e *env) virsh(args ...string) string {
	e.t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", e.uri}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("virsh %v: %v: %s", args, err, out)
	}
	return string(out)
}

// TestPoolLifecycle: a pool with min_idle 2 boots two guests whose agents register
// (through the relay, under their guest names, attested by the host) and `vm ls` shows
// them; no guest has a network interface; a backlog of test.sleep tasks (a type served
// by the handler named testhandler) scales the pool to max, and it scales back to
// min_idle after idle_timeout; `virsh destroy` of a guest running a task: the task
// succeeds on another guest and a replacement boots. Bad pools beside it (image digest
// missing, min_idle > max, memory below the image's need, a task type no handler serves,
// a handler name given as a task type) are reported and the good pool runs.
func TestPoolLifecycle(t *testing.T) {
	pool := "hd" + randHex(2)
	_, img := realImage(t)
	need := vmpool.RequiredMemoryMiB(img)
	pools := []vmpool.PoolConfig{
		{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 2, Max: 3, IdleTimeout: 8 * time.Second, TaskTypes: []string{"test.sleep", "test.echo"}},
		{Name: "nodigest", Image: "deadbeefdeadbeef", VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: time.Minute},
		{Name: "minmax", VCPUs: 1, MemoryMiB: 256, MinIdle: 3, Max: 1, IdleTimeout: time.Minute},
		{Name: "lowmem", VCPUs: 1, MemoryMiB: max(need-1, vmpool.MinMemoryMiB), MinIdle: 1, Max: 1, IdleTimeout: time.Minute},
		{Name: "notype", VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: time.Minute, TaskTypes: []string{"test.echo", "test.nope"}},
		{Name: "handlername", VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: time.Minute, TaskTypes: []string{handlerName}},
	}
	e := start(t, pools, hostload.Thresholds{})
	e.waitFor("two registered guests", bootWait, func() bool { return len(e.registered(pool)) == 2 })

	// Bad pools: clear errors naming the field; no guests; the good pool runs.
	st := map[string]vmpool.PoolStatus{}
	for _, p := range e.d.Manager().Pools() {
		st[p.Name] = p
	}
	for name, field := range map[string]string{"nodigest": "image", "minmax": "min_idle", "lowmem": "memory",
		"notype": `task_types[1]: no handler of image`, "handlername": `task_types[0]: no handler of image`} {
		if name == "lowmem" && need-1 < vmpool.MinMemoryMiB {
			t.Logf("lowmem: the image needs only %d MiB, the floor; memory below the floor is refused by Validate instead", need)
		}
		if p := st[name]; p.State != vmpool.PoolError || !strings.Contains(p.Error, field) {
			t.Errorf("pool %s: state %s error %q, want error naming %q", name, p.State, p.Error, field)
		}
		if len(e.guests(name)) != 0 {
			t.Errorf("bad pool %s has guests", name)
		}
	}

	// vm ls shows them, with the agent connected; host ls shows the host.
	e.waitFor("vm ls shows both with their agent", 30*time.Second, func() bool {
		n := 0
		for _, v := range e.vms() {
			if v.GetPool() == pool && v.GetAgent() == "connected" && v.GetHost() == e.hostID {
				n++
			}
		}
		return n == 2
	})
	hosts, err := e.cluster.ListHosts(context.Background(), connect.NewRequest(&paddockv1.ListHostsRequest{}))
	if err != nil || len(hosts.Msg.GetHosts()) != 1 || hosts.Msg.GetHosts()[0].GetId() != e.hostID || hosts.Msg.GetHosts()[0].GetState() != "connected" {
		t.Fatalf("host ls: %v %v", hosts, err)
	}
	for _, g := range e.guests(pool) {
		if x := e.virsh("dumpxml", g.Name); strings.Contains(x, "<interface") {
			t.Errorf("guest %s has a network interface:\n%s", g.Name, x)
		}
		if a := e.agents()[g.Name]; a.GetHost() != e.hostID {
			t.Errorf("agent %s: host %q, want the attested %q", g.Name, a.GetHost(), e.hostID)
		}
	}

	// Backlog: 12 sleep tasks; two guests take 4 each, the rest queue → scale to max 3.
	var ids []string
	for range 12 {
		ids = append(ids, e.submit("test.sleep", "6s"))
	}
	e.waitFor("scale-up to max (3 guests)", bootWait, func() bool { return len(e.guests(pool)) == 3 })
	for _, id := range ids {
		if got := e.wait(id, 5*time.Minute); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("task %s: %v", id, got)
		}
	}
	e.waitFor("scale-down to min_idle 2 after idle_timeout", 2*time.Minute, func() bool { return len(e.guests(pool)) == 2 })

	// virsh destroy of a guest running a task: the task succeeds elsewhere; a replacement boots.
	id := e.submit("test.sleep", "20s")
	var victim string
	e.waitFor("the task running", time.Minute, func() bool {
		r, err := e.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if err == nil && r.Msg.GetTask().GetState() == paddockv1.State_STATE_RUNNING {
			victim = r.Msg.GetTask().GetAgentId()
		}
		return victim != ""
	})
	destroyed := time.Now()
	e.virsh("destroy", victim)
	got := e.wait(id, 5*time.Minute)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || got.GetAgentId() == victim {
		t.Fatalf("after destroying %s: %v", victim, got)
	}
	if !strings.Contains(got.String(), "gone") {
		t.Errorf("the first attempt's error does not say the guest was gone: %v", got.GetAttempts())
	}
	t.Logf("task requeued and finished on %s %v after virsh destroy of %s (lease TTL 30s, task 20s)", got.GetAgentId(), time.Since(destroyed).Round(time.Millisecond), victim)
	e.waitFor("a replacement guest registered", bootWait, func() bool {
		n := 0
		for _, g := range e.registered(pool) {
			if g != victim {
				n++
			}
		}
		return n >= 2
	})
}

// TestMaxTasksPerVMOne: with max_tasks_per_vm 1 every task runs in a guest no earlier
// task used.
func TestMaxTasksPerVMOne(t *testing.T) {
	pool := "one" + randHex(2)
	e := start(t, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 2, IdleTimeout: time.Minute, MaxTasksPerVM: 1,
		TaskTypes: []string{"test.echo"}}}, hostload.Thresholds{})
	e.waitFor("a registered guest", bootWait, func() bool { return len(e.registered(pool)) >= 1 })
	used := map[string]string{}
	var ids []string
	for range 4 {
		ids = append(ids, e.submit("test.echo", "hi"))
	}
	for _, id := range ids {
		got := e.wait(id, 8*time.Minute)
		if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("task %s: %v", id, got)
		}
		if prev, ok := used[got.GetAgentId()]; ok {
			t.Fatalf("tasks %s and %s both ran in guest %s", prev, id, got.GetAgentId())
		}
		used[got.GetAgentId()] = id
	}
}

// TestCPUThresholdBlocksScaleUp: with thresholds.cpu_percent below the host's load, a
// backlog does not boot guests; the reason is in the log and on /metrics.
func TestCPUThresholdBlocksScaleUp(t *testing.T) {
	// Keep one core busy so the real load is surely above the threshold.
	itest.BusyCore(t)
	pool := "cpu" + randHex(2)
	e := start(t, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 2, IdleTimeout: time.Minute, TaskTypes: []string{"test.sleep"}}},
		hostload.Thresholds{CPUPercent: 0.001})
	for range 3 {
		e.submit("test.sleep", "1s")
	}
	e.waitFor("scale-up blocked for cpu", time.Minute, func() bool {
		for _, p := range e.d.Manager().Pools() {
			if p.Name == pool && len(p.Blocked) > 0 && p.Blocked[0] == vmpool.BlockedCPU {
				return true
			}
		}
		return false
	})
	time.Sleep(2 * time.Second)
	if n := len(e.guests(pool)); n != 0 {
		t.Fatalf("%d guests booted while the host was above its CPU threshold", n)
	}
	if !strings.Contains(e.logs.String(), "pool not scaling up") || !strings.Contains(e.logs.String(), "reason=cpu") {
		t.Errorf("no log line says why:\n%s", e.logs.String())
	}
	mfs, err := e.d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "paddock_vmpool_scale_up_blocked" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pool"] == pool && labels["reason"] == "cpu" && m.GetGauge().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Error("paddock_vmpool_scale_up_blocked{reason=\"cpu\"} is not 1 on the daemon's /metrics registry")
	}
}

// TestUnreachableServer: the daemon keeps running its pools and says clearly why it has
// no link.
func TestUnreachableServer(t *testing.T) {
	hv, _ := connectLibvirt(t)
	store, img := realImage(t)
	dir := t.TempDir()
	if _, err := pki.EnsureDevCA(dir); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.DevHostTLS(dir, "unreach")
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	runDir := qemuDir(t, "pdhu-")
	t.Cleanup(func() { os.RemoveAll(runDir) })
	logs := &logBuf{}
	d, err := hostd.New(hostd.Config{Server: addr, TLS: tlsCfg, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Pools: vmpool.Config{HostID: "unreach", RunDir: runDir, Tick: 200 * time.Millisecond,
			Pools: []vmpool.PoolConfig{{Name: "u" + randHex(2), Image: img.Digest[:16], VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 1, IdleTimeout: time.Minute}}}}, hv, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		up, lerr := d.Connected()
		if !up && lerr != nil && strings.Contains(lerr.Error(), "host.server") && strings.Contains(logs.String(), "no link with the server") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clear link error: %v\n%s", lerr, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range d.Manager().Pools() {
		if p.State != vmpool.PoolRunning {
			t.Errorf("pool %s is %s while the server is unreachable: %s", p.Name, p.State, p.Error)
		}
	}
	if _, err := hostd.New(hostd.Config{Server: "nohostport", TLS: tlsCfg, Pools: vmpool.Config{HostID: "x", RunDir: runDir}}, hv, store); err == nil || !strings.Contains(err.Error(), "host.server") {
		t.Errorf("a bad host.server: %v, want an error naming host.server", err)
	}
}

// TestGuestClaimingAnotherIdentityIsRefused boots a real guest whose agent is
// configured to register as an existing guest of the pool; the host relays it under
// its own name; the server refuses it and the victim's agent is untouched.
func TestGuestClaimingAnotherIdentityIsRefused(t *testing.T) {
	pool := "id" + randHex(2)
	e := start(t, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: time.Minute, TaskTypes: []string{"test.echo"}}}, hostload.Thresholds{})
	e.waitFor("the victim registered", bootWait, func() bool { return len(e.registered(pool)) == 1 })
	victim := e.registered(pool)[0]
	before := e.agents()[victim]

	// An image whose agent claims the victim's id.
	cfg, _ := json.Marshal(map[string]any{"id": victim})
	rogueImg, err := e.store.Build(context.Background(), images.Spec{Agent: shared.agent, Handlers: []images.Handler{{Name: handlerName, Path: shared.th}}, AgentConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	name := "paddock-rogue-" + randHex(4)
	dir := filepath.Join(e.runDir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256, Kernel: rogueImg.Kernel(), Initrd: rogueImg.Initrd(),
		Cmdline: vmpool.GuestCmdline(vmpool.DefaultCmdline, name), Channels: []hypervisor.Channel{{Name: "org.paddock.agent.0", SocketPath: sock}},
		ConsoleLog: filepath.Join(dir, "console.log")}
	if d, ok := vmpool.HandlerDisk(rogueImg, "vda"); ok {
		spec.Disks = []hypervisor.Disk{d}
	}
	if _, err := e.hv.Create(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.hv.Destroy(context.Background(), name) })
	ref := vmpool.GuestRef{HostID: e.hostID, Pool: pool, Name: name, Socket: sock}
	ctx, cancel := context.WithTimeout(context.Background(), bootWait)
	defer cancel()
	conn, _, err := vmpool.SocketConnector{}.WaitReady(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	go e.d.Serve(ctx, ref, conn)
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(e.logs.String(), "agent refused: it claims another identity") {
		if time.Now().After(deadline) {
			t.Fatalf("the server never refused the rogue guest")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // let it retry a few times
	after := e.agents()[victim]
	if after.GetState() != "connected" || after.GetConnectedAtUnixMs() != before.GetConnectedAtUnixMs() || after.GetHost() != e.hostID {
		t.Fatalf("the victim changed: before %v after %v", before, after)
	}
	if _, ok := e.agents()[name]; ok {
		t.Fatal("the rogue got an agent record under its own name")
	}
	// The victim still runs tasks.
	if got := e.wait(e.submit("test.echo", "still me"), 2*time.Minute); got.GetState() != paddockv1.State_STATE_SUCCEEDED || got.GetAgentId() != victim {
		t.Fatalf("after the rogue: %v", got)
	}
}

var dataShared struct {
	once  sync.Once
	store *images.Store
	img   images.Image
	err   error
}

// dataImage builds (once) an image of the real paddock-agent with the checksum and
// compress handlers, which take inputs as files and write outputs as files.
func dataImage(t testing.TB) (*images.Store, images.Image) {
	t.Helper()
	store, _ := realImage(t) // the agent, and the store to add the image to
	dataShared.once.Do(func() {
		var hs []images.Handler
		for _, name := range []string{"checksum", "compress"} {
			path := filepath.Join(shared.dir, name)
			if dataShared.err = goBuild(path, "github.com/paddockvm/paddock/plugins/handlers/"+name); dataShared.err != nil {
				return
			}
			hs = append(hs, images.Handler{Name: name, Path: path})
		}
		dataShared.store = store
		dataShared.img, dataShared.err = store.Build(context.Background(), images.Spec{Agent: shared.agent, Handlers: hs})
	})
	if dataShared.err != nil {
		t.Fatalf("building the data-plane test image: %v", dataShared.err)
	}
	return dataShared.store, dataShared.img
}

// metric returns the sum of the daemon's metric name over the series whose labels
// include labels.
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.d.Registry().Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func (e *env) submitBlobs(typ string, inputs map[string]blob.Digest) string {
	e.t.Helper()
	spec := &paddockv1.TaskSpec{Type: typ, MaxAttempts: 3, InputBlobs: map[string]*paddockv1.BlobRef{}}
	for n, d := range inputs {
		spec.InputBlobs[n] = &paddockv1.BlobRef{Digest: string(d)}
	}
	r, err := e.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Msg.GetTask().GetId()
}

// TestDataPlane: a host with a cache registers "stage"; a checksum task on an input
// blob (uploaded into the server's blob store) runs in a real guest that reads it from
// its input share: the handler's sha256 is the input's; a second task on the same
// input is a cache hit (nothing fetched); a compress task's output file is collected
// from the guest's output share back into the server's blob store, byte-identical
// (gunzip gives the input back); the leases' directories are removed afterwards.
func TestDataPlane(t *testing.T) {
	pool := "dp" + randHex(2)
	e := startWith(t, options{img: dataImage, dataPlane: true, pools: []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1,
		IdleTimeout: time.Minute, TaskTypes: []string{"checksum", "compress.gzip"}}}})
	if e.d.Cache() == nil {
		t.Fatal("the daemon has no cache though Config.Cache.Dir is set")
	}
	t.Cleanup(func() { // runs before the daemon stops and removes the guests' directories
		if t.Failed() {
			for _, g := range e.d.Manager().Snapshot() {
				b, _ := os.ReadFile(filepath.Join(g.Dir, "console.log"))
				t.Logf("console of %s (last 4 KiB):\n%s", g.Name, b[max(0, len(b)-4096):])
			}
		}
	})
	// Under TCG on a loaded 2-core machine a boot has taken over 2.5 minutes.
	e.waitFor("a registered guest", 2*bootWait, func() bool { return len(e.registered(pool)) == 1 })
	if !strings.Contains(e.logs.String(), "capabilities=[stage]") {
		t.Errorf("the server did not log the host's capability stage:\n%s", e.logs.String())
	}
	guest := e.registered(pool)[0]
	ref, ok := e.d.Manager().Guest(guest)
	if !ok || ref.InDir == "" || ref.OutDir == "" {
		t.Fatalf("guest %s: %+v %v, want shared directories", guest, ref, ok)
	}
	if x := e.virsh("dumpxml", guest); !strings.Contains(x, "paddock.in") || !strings.Contains(x, "paddock.out") {
		t.Errorf("guest %s exports no shared directories:\n%s", guest, x)
	}

	input := make([]byte, 3<<20+12345)
	if _, err := rand.Read(input[:1<<20]); err != nil { // half random, half compressible
		t.Fatal(err)
	}
	d := blob.FromBytes(input)
	if _, err := e.blobs.Put(context.Background(), d, int64(len(input)), bytes.NewReader(input)); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(input)
	checksum := func(what string) {
		t.Helper()
		start := time.Now()
		got := e.wait(e.submitBlobs("checksum", map[string]blob.Digest{"data": d}), 5*time.Minute)
		if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("%s: %v", what, got)
		}
		t.Logf("%s of %d bytes: submit → succeeded in %v", what, len(input), time.Since(start).Round(time.Millisecond))
		var out struct {
			Inputs map[string]struct {
				Size   int64  `json:"size"`
				SHA256 string `json:"sha256"`
			} `json:"inputs"`
		}
		if err := json.Unmarshal(got.GetOutput(), &out); err != nil {
			t.Fatalf("%s: output %q: %v", what, got.GetOutput(), err)
		}
		if s := out.Inputs["data"]; s.SHA256 != hex.EncodeToString(sum[:]) || s.Size != int64(len(input)) {
			t.Fatalf("%s: the handler saw %+v, want sha256 %x of %d bytes", what, s, sum, len(input))
		}
	}
	checksum("first checksum")
	fetched := e.metric("paddock_host_cache_fetched_bytes_total", nil)
	if fetched != float64(len(input)) {
		t.Errorf("after the first task the cache fetched %v bytes, want %d", fetched, len(input))
	}
	hits := e.metric("paddock_host_cache_hits_total", nil)
	checksum("second checksum")
	if f := e.metric("paddock_host_cache_fetched_bytes_total", nil); f != fetched {
		t.Errorf("the second task on the same input fetched %v bytes, want 0", f-fetched)
	}
	if h := e.metric("paddock_host_cache_hits_total", nil); h != hits+1 {
		t.Errorf("cache hits %v → %v, want one more", hits, h)
	}
	if v := e.metric("paddock_host_staged_bytes_total", map[string]string{"source": "cached"}); v != float64(len(input)) {
		t.Errorf("paddock_host_staged_bytes_total{source=cached} = %v, want %d", v, len(input))
	}

	start := time.Now()
	got := e.wait(e.submitBlobs("compress.gzip", map[string]blob.Digest{"data": d}), 5*time.Minute)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("compress: %v", got)
	}
	t.Logf("compress.gzip of %d bytes: submit → succeeded (output collected) in %v", len(input), time.Since(start).Round(time.Millisecond))
	out := got.GetOutputBlobs()["data.gz"]
	if out == nil {
		t.Fatalf("compress: no output blob data.gz: %v", got)
	}
	rc, err := e.blobs.Open(context.Background(), blob.Digest(out.GetDigest()), 0)
	if err != nil {
		t.Fatalf("the output blob is not in the server's store: %v", err)
	}
	gz, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || int64(len(gz)) != out.GetSize() || blob.FromBytes(gz) != blob.Digest(out.GetDigest()) {
		t.Fatalf("output blob: %d bytes (%v), reported %d bytes %s", len(gz), err, out.GetSize(), out.GetDigest())
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(plain, input) {
		t.Fatalf("gunzip of the collected output: %d bytes (%v), want the %d input bytes", len(plain), err, len(input))
	}
	if v := e.metric("paddock_host_collected_total", map[string]string{"result": "ok"}); v != 1 {
		t.Errorf("paddock_host_collected_total{result=ok} = %v, want 1", v)
	}
	e.waitFor("the leases' directories removed", 30*time.Second, func() bool {
		for _, dir := range []string{ref.InDir, ref.OutDir} {
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
				return false
			}
		}
		return true
	})
}
