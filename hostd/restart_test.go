package hostd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/hostd"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// childEnv, when set, makes the test binary run a host daemon (childSpec, as JSON)
// instead of the tests: TestHostRestartReportsLeftovers kills it with SIGKILL.
const childEnv = "PADDOCK_HOSTD_TEST_CHILD"

// childSpec is what a child host daemon runs.
type childSpec struct {
	URI, Server, PKIDir, HostID, RunDir, Store string
	Pools                                      []vmpool.PoolConfig
}

// runChildDaemon runs the host daemon childEnv describes until it is killed.
func runChildDaemon() int {
	var sp childSpec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &sp); err != nil {
		fmt.Fprintln(os.Stderr, "child daemon: bad spec:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("side", "child-host")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	hv, err := hypervisor.Connect(ctx, hypervisor.Config{URI: sp.URI, Prefix: "paddock-", Accel: hypervisor.AccelTCG}, hypervisor.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child daemon:", err)
		return 1
	}
	store, err := images.Open(sp.Store)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child daemon:", err)
		return 1
	}
	tlsCfg, err := pki.DevHostTLS(sp.PKIDir, sp.HostID)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child daemon:", err)
		return 1
	}
	d, err := hostd.New(hostd.Config{Server: sp.Server, TLS: tlsCfg, LoadInterval: 500 * time.Millisecond, Accel: "tcg", Version: "test-child", Logger: log,
		Pools: vmpool.Config{HostID: sp.HostID, RunDir: sp.RunDir, Pools: sp.Pools, Tick: 200 * time.Millisecond, StatsInterval: time.Second}}, hv, store)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child daemon:", err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child daemon:", err)
		return 1
	}
	return 0
}

// TestHostRestartReportsLeftovers: a host daemon (a child process) runs a guest that
// runs a long test.sleep task; the daemon is killed with SIGKILL (no shutdown: its
// guest stays up); a new daemon with the same host id and run_dir starts, destroys the
// leftover guest and reports it gone at once, so the server requeues the task with an
// attempt error naming the guest as gone because the daemon restarted. The server's
// lease_ttl is 30 minutes, so lease expiry cannot be what requeued it.
func TestHostRestartReportsLeftovers(t *testing.T) {
	store, img := realImage(t)
	hv, uri := connectLibvirt(t)
	e := &env{t: t, uri: uri, hv: hv, hostID: "hostd-rs-" + randHex(3), logs: &logBuf{}, img: img, store: store, leaseTTL: 30 * time.Minute}
	t.Cleanup(func() { // last: whatever the test left, destroy it
		doms, _ := hv.List(context.Background())
		for _, d := range doms {
			if d.Labels[vmpool.LabelHost] == e.hostID {
				hv.Destroy(context.Background(), d.Name)
			}
		}
	})
	clusterAddr := startServer(t, e, false)
	e.runDir = qemuDir(t, "pdhr-")
	t.Cleanup(func() { os.RemoveAll(e.runDir) })
	pool := "rs" + randHex(2)
	pools := []vmpool.PoolConfig{{Name: pool, Image: img.Digest[:16], VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: time.Minute,
		TaskTypes: []string{"test.sleep"}}}

	spec, _ := json.Marshal(childSpec{URI: uri, Server: clusterAddr, PKIDir: e.pkiDir, HostID: e.hostID, RunDir: e.runDir,
		Store: filepath.Join(shared.dir, "store"), Pools: pools})
	childLog, err := os.Create(filepath.Join(t.TempDir(), "child.log"))
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+string(spec))
	child.Stdout, child.Stderr = childLog, childLog
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() {
		child.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(childLog.Name())
			t.Logf("child daemon's log:\n%s", b)
			t.Logf("logs:\n%s", e.logs.String())
		}
	})

	wait := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s", within, what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wait("the child's guest registered", bootWait, func() bool {
		for _, a := range e.agents() {
			if a.GetHost() == e.hostID && a.GetState() == "connected" {
				return true
			}
		}
		return false
	})
	id := e.submit("test.sleep", "30m")
	var victim string
	wait("the task running", 2*time.Minute, func() bool {
		r, err := e.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if err == nil && r.Msg.GetTask().GetState() == paddockv1.State_STATE_RUNNING {
			victim = r.Msg.GetTask().GetAgentId()
		}
		return victim != ""
	})

	// The crash: no shutdown, the guest stays up.
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	exited <- nil // for the cleanup
	if !domainExists(t, hv, victim) {
		t.Fatalf("guest %s is gone after the daemon was killed: the crash was not simulated", victim)
	}
	r, err := e.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
	if err != nil || r.Msg.GetTask().GetState() != paddockv1.State_STATE_RUNNING || len(r.Msg.GetTask().GetAttempts()) != 1 {
		t.Fatalf("after the kill, before the restart: want the task still running its first attempt (lease_ttl 30m): %v %v", r, err)
	}

	// The restart.
	e.startDaemon(clusterAddr, pools, hostload.Thresholds{}, false)
	var first *paddockv1.Attempt
	wait("the task's first attempt ended by the restart", 3*time.Minute, func() bool {
		r, err := e.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range r.Msg.GetTask().GetAttempts() {
			if a.GetNumber() == 1 && a.GetError() != "" {
				first = a
			}
		}
		return first != nil
	})
	if msg := first.GetError(); first.GetAgentId() != victim || !strings.Contains(msg, "guest "+victim) || !strings.Contains(msg, "gone") ||
		!strings.Contains(msg, "restarted") || strings.Contains(msg, "expired") {
		t.Fatalf("first attempt %v: want its error to name guest %s as gone because the host daemon restarted", first, victim)
	}
	if k := first.GetFailureKind(); k != paddockv1.FailureKind_FAILURE_KIND_GUEST_GONE {
		t.Errorf("first attempt's failure kind %v, want FAILURE_KIND_GUEST_GONE (not lease expiry)", k)
	}
	if !first.GetRetryable() {
		t.Errorf("first attempt %v: want it retryable", first)
	}
	if domainExists(t, hv, victim) {
		t.Errorf("the new daemon left the old guest %s running", victim)
	}
	t.Logf("first attempt ended: %s", first.GetError())
}

func domainExists(t *testing.T, hv *hypervisor.Libvirt, name string) bool {
	t.Helper()
	doms, err := hv.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range doms {
		if d.Name == name {
			return true
		}
	}
	return false
}
