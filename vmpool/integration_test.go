package vmpool

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/internal/testutil"
	"github.com/paddockvm/paddock/vmpool/hostload"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// bootWait bounds a TCG boot on a busy 2-core machine (about 5–10 s when idle).
const bootWait = 4 * time.Minute

var (
	shared struct {
		once  sync.Once
		dir   string
		store *images.Store
		img   images.Image
		err   error
	}
	sharedDirs []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range sharedDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func mkQEMUDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return errors.New("go build " + pkg + ": " + err.Error() + ": " + string(b))
	}
	return nil
}

// realImage builds (once per test binary) the real paddock-agent and the checksum
// example handler with CGO_ENABLED=0 and an image of them on the host's kernel, in a
// store QEMU can read.
func realImage(t testing.TB) (*images.Store, images.Image) {
	t.Helper()
	testutil.RequireKernel(t)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "paddock-vmpool-img-")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			shared.err = err
			return
		}
		sharedDirs = append(sharedDirs, dir)
		agentBin, handler := filepath.Join(dir, "paddock-agent"), filepath.Join(dir, "checksum")
		if shared.err = goBuild(dir, agentBin, "github.com/paddockvm/paddock/cmd/paddock-agent"); shared.err != nil {
			return
		}
		if shared.err = goBuild(dir, handler, "github.com/paddockvm/paddock/plugins/handlers/checksum"); shared.err != nil {
			return
		}
		if shared.store, shared.err = images.Open(filepath.Join(dir, "store")); shared.err != nil {
			return
		}
		shared.img, shared.err = shared.store.Build(context.Background(), images.Spec{Agent: agentBin, Handlers: []images.Handler{{Name: "checksum", Path: handler}}})
	})
	if shared.err != nil {
		t.Fatalf("building the test image: %v", shared.err)
	}
	return shared.store, shared.img
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func connectLibvirt(t testing.TB) (*hypervisor.Libvirt, string) {
	t.Helper()
	uri := testutil.RequireLibvirt(t)
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

// realEnv runs a Manager on real libvirt with one pool of the real image.
type realEnv struct {
	hv      *hypervisor.Libvirt
	uri     string
	m       *Manager
	reg     *prometheus.Registry
	mon     *hostload.Monitor
	backlog *Counts
	logs    *logBuf
	pool    string
	hostID  string
	// stop ends the Manager and waits for it (the test's cleanup calls it too).
	stop func()
}

func startReal(t *testing.T, pc PoolConfig, th hostload.Thresholds) *realEnv {
	t.Helper()
	return startRealCfg(t, pc, func(c *Config) { c.Thresholds = th })
}

// startRealCfg is startReal with edit applied to the host configuration. A pool name
// (pc.Name) and host id (set by edit) are kept; otherwise both are random.
func startRealCfg(t *testing.T, pc PoolConfig, edit func(*Config)) *realEnv {
	t.Helper()
	hv, uri := connectLibvirt(t)
	store, img := realImage(t)
	e := &realEnv{hv: hv, uri: uri, reg: prometheus.NewPedanticRegistry(), backlog: &Counts{}, logs: &logBuf{t: t},
		pool: pc.Name, hostID: "vmpool-test-" + randHex(4)}
	if e.pool == "" {
		e.pool = "vmp" + randHex(2)
	}
	pc.Name, pc.Image = e.pool, img.Digest[:16]
	runDir := mkQEMUDir(t, "pdvmp-")
	t.Cleanup(func() { os.RemoveAll(runDir) })
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	if e.mon, err = hostload.New(500*time.Millisecond, hostload.WithLogger(log)); err != nil {
		t.Fatal(err)
	}
	e.reg.MustRegister(e.mon)
	cfg := Config{HostID: e.hostID, RunDir: runDir, Pools: []PoolConfig{pc}, Tick: 200 * time.Millisecond, StatsInterval: time.Second}
	if edit != nil {
		edit(&cfg)
	}
	e.hostID = cfg.HostID
	if e.m, err = New(cfg, hv, store, WithLogger(log), WithBacklog(e.backlog), WithLoad(e.mon), WithRegisterer(e.reg)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go e.mon.Run(ctx)
	go func() { done <- e.m.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(2 * time.Minute):
				t.Errorf("Run did not return after cancel")
			}
			// Belt and braces: nothing of this host may survive the Manager.
			doms, _ := hv.List(context.Background())
			for _, d := range doms {
				if d.Labels[LabelHost] == e.hostID {
					t.Errorf("guest %s survived the Manager", d.Name)
					hv.Destroy(context.Background(), d.Name)
				}
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

func (e *realEnv) idle() []GuestInfo {
	var out []GuestInfo
	for _, g := range e.m.Snapshot() {
		if g.State == StateIdle {
			out = append(out, g)
		}
	}
	return out
}

func waitFor(t *testing.T, e *realEnv, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; guests %+v; pools %+v\nlog:\n%s", within, what, brief(e.m.Snapshot()), e.m.Pools(), e.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func virsh(t *testing.T, uri string, args ...string) string {
	t.Helper()
	out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("virsh %v: %v: %s", args, err, out)
	}
	return string(out)
}

// TestRealMinIdleReplaceNoNIC boots a pool with min_idle 2 on real libvirt (TCG) from an
// image of the real agent: both guests write their ready line; their domain XML has no
// network interface and carries a scratch disk; `virsh destroy` of one makes the pool
// replace it; libvirt statistics reach Snapshot and /metrics.
func TestRealMinIdleReplaceNoNIC(t *testing.T) {
	pc := PoolConfig{VCPUs: 1, MemoryMiB: 256, MinIdle: 2, Max: 2, IdleTimeout: time.Hour, ScratchMiB: 16}
	e := startReal(t, pc, hostload.Thresholds{})
	waitFor(t, e, "two ready guests", bootWait, func() bool { return len(e.idle()) == 2 })
	first := e.idle()
	for _, g := range first {
		if g.BootTime <= 0 || g.AgentVersion == "" {
			t.Errorf("guest %s: boot time %v, agent version %q", g.Name, g.BootTime, g.AgentVersion)
		}
		x := virsh(t, e.uri, "dumpxml", g.Name)
		if strings.Contains(x, "<interface") {
			t.Errorf("guest %s has a network interface:\n%s", g.Name, x)
		}
		if !strings.Contains(x, "scratch-") || !strings.Contains(x, agent.DefaultPort) {
			t.Errorf("guest %s XML lacks its scratch disk or agent channel:\n%s", g.Name, x)
		}
		for _, f := range []string{socketName, "console.log"} {
			if _, err := os.Stat(filepath.Join(g.Dir, f)); err != nil {
				t.Errorf("guest %s: %v", g.Name, err)
			}
		}
		t.Logf("guest %s ready after %v (agent %s)", g.Name, g.BootTime.Round(time.Millisecond), g.AgentVersion)
	}
	waitFor(t, e, "libvirt statistics", 30*time.Second, func() bool {
		for _, g := range e.m.Snapshot() {
			if !g.HaveStats || g.CPUTime <= 0 || g.MemoryBytes != 256<<20 {
				return false
			}
		}
		return true
	})
	victim := first[0]
	virsh(t, e.uri, "destroy", victim.Name)
	waitFor(t, e, "the destroyed guest replaced", bootWait, func() bool {
		gs := e.idle()
		if len(gs) != 2 {
			return false
		}
		for _, g := range gs {
			if g.Name == victim.Name {
				return false
			}
		}
		return true
	})
	if _, err := os.Stat(victim.Dir); !os.IsNotExist(err) {
		t.Errorf("directory of the destroyed guest still exists: %v", err)
	}
	var lost float64
	for _, r := range []string{"stopped", "stream", "missing", "crashed"} {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_guests_lost_total", map[string]string{"pool": e.pool, "reason": r})
		lost += v
	}
	if lost != 1 {
		t.Errorf("guests_lost_total summed over reasons = %v, want 1", lost)
	}
	if _, ok := metricValue(t, e.reg, "paddock_guest_cpu_seconds_total", map[string]string{"pool": e.pool, "guest": first[1].Name}); !ok {
		t.Errorf("no paddock_guest_cpu_seconds_total for %s", first[1].Name)
	}
}

// TestRealThresholdBlocksScaleUp: with thresholds.cpu_percent below the host's real
// load (measured by gopsutil), a backlog does not scale the pool past its min_idle
// floor; the reason is in the log and on /metrics.
func TestRealThresholdBlocksScaleUp(t *testing.T) {
	// Keep one core busy so the real load is surely above the threshold.
	testutil.BusyCore(t)
	pc := PoolConfig{VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 2, IdleTimeout: time.Hour}
	e := startReal(t, pc, hostload.Thresholds{CPUPercent: 0.01})
	waitFor(t, e, "the min_idle guest", bootWait, func() bool { return len(e.idle()) == 1 })
	e.backlog.Set("checksum", 3)
	waitFor(t, e, "scale-up blocked on cpu", 30*time.Second, func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": e.pool, "reason": "cpu"})
		return v == 1
	})
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if n := len(e.m.Snapshot()); n != 1 {
			t.Fatalf("the pool has %d guests while the host is above its CPU threshold, want 1", n)
		}
	}
	srv := httptest.NewServer(promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`paddock_vmpool_scale_up_blocked{pool="` + e.pool + `",reason="cpu"} 1`,
		`paddock_host_cpu_percent `,
		`paddock_host_memory_available_bytes `,
		`paddock_host_nic_receive_bytes_per_second `,
		`paddock_vmpool_guests{pool="` + e.pool + `",state="idle"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `msg="pool not scaling up" pool=`+e.pool+` reason=cpu`) || !strings.Contains(logs, "above thresholds.cpu_percent 0.01%") {
		t.Errorf("the log does not say why the pool does not scale up:\n%s", logs)
	}
	s, _ := e.mon.Latest()
	t.Logf("host load: cpu %.1f%%, mem available %d MiB, nic rx %.0f B/s tx %.0f B/s", s.CPUPercent, s.MemAvailableBytes>>20, s.NICRxBytesPerSec, s.NICTxBytesPerSec)
}

// BenchmarkScaleUpToReady measures, in the same run, the time from a pool's scale-up
// decision (a backlog appears) to the guest's ready line, beside a raw `virsh create`
// of the same image's domain XML to the agent's ready line on the channel socket.
//
//	sudo go test ./vmpool/ -run '^$' -bench ScaleUpToReady -benchtime 3x
func BenchmarkScaleUpToReady(b *testing.B) {
	hv, uri := connectLibvirt(b)
	store, img := realImage(b)
	runDir := mkQEMUDir(b, "pdvmb-")
	b.Cleanup(func() { os.RemoveAll(runDir) })
	name := "vmb" + randHex(2)
	backlog := &Counts{}
	cfg := Config{HostID: "vmpool-bench-" + randHex(4), RunDir: runDir, Tick: 100 * time.Millisecond,
		Pools: []PoolConfig{{Name: name, Image: img.Digest, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 1, IdleTimeout: 100 * time.Millisecond}}}
	m, err := New(cfg, hv, store, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), WithBacklog(backlog))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done })

	var pool, raw time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		backlog.Set("checksum", 1)
		var g GuestInfo
		for deadline := time.Now().Add(bootWait); ; time.Sleep(20 * time.Millisecond) {
			if s := m.Snapshot(); len(s) == 1 && s[0].State == StateIdle {
				g = s[0]
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("no ready guest: %+v", m.Pools())
			}
		}
		pool += g.BootTime
		backlog.Set("checksum", 0)
		for deadline := time.Now().Add(time.Minute); len(m.Snapshot()) > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("the idle guest was not stopped")
			}
		}
		raw += rawVirshCreate(b, uri, img, runDir)
	}
	b.StopTimer()
	b.ReportMetric((pool / time.Duration(b.N)).Seconds(), "s/pool-decision-to-ready")
	b.ReportMetric((raw / time.Duration(b.N)).Seconds(), "s/virsh-create-to-ready")
}

// rawVirshCreate boots the image with `virsh create` of its domain XML and returns the
// time to the agent's ready line on the channel socket.
func rawVirshCreate(b *testing.B, uri string, img images.Image, runDir string) time.Duration {
	name := "paddock-vmbraw-" + randHex(4)
	dir := filepath.Join(runDir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256, Kernel: img.Kernel(), Initrd: img.Initrd(), Cmdline: DefaultCmdline,
		Channels: []hypervisor.Channel{{Name: agent.DefaultPort, SocketPath: filepath.Join(dir, socketName)}}, ConsoleLog: filepath.Join(dir, "console.log")}
	x, err := spec.XML(hypervisor.AccelTCG)
	if err != nil {
		b.Fatal(err)
	}
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(x), 0o644); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if out, err := exec.Command("virsh", "-c", uri, "create", xmlPath).CombinedOutput(); err != nil {
		b.Fatalf("virsh create: %v: %s", err, out)
	}
	defer exec.Command("virsh", "-c", uri, "destroy", name).Run()
	var conn net.Conn
	for deadline := time.Now().Add(bootWait); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("unix", spec.Channels[0].SocketPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(bootWait))
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("reading the ready line of %s: %v", name, err)
		}
		if strings.HasPrefix(line, agent.ReadyPrefix) {
			return time.Since(start)
		}
	}
}
