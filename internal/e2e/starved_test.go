package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

// TestStarvedGuestKeepsItsTask: a real guest running a task is starved of host CPU
// for 25 s (libvirt's vCPU bandwidth cut to 1 ms a second: its agent falls silent far
// past the 5 s agent timeout and the 10 s lease TTL) and then given it back. Its host
// daemon still sees the guest's CPU time rise, so the server keeps the agent's session
// and renews its lease: the task, allowed a single attempt, succeeds on it. Without the
// host's word the session closed after 5 s and the lease expired: the task went dead.
func TestStarvedGuestKeepsItsTask(t *testing.T) {
	g := newGuestEnv(t)
	bin := binaries(t)
	dir := dataDir(t)
	p := startDev(t, g, bin, dir, "--guests", "1", "--max-guests", "1")
	guest := oneConnectedGuest(t, p)
	id := strings.TrimSpace(string(p.run(t, bin, "task", "submit", "-q", "--type", "test.sleep", "--payload", "30s", "--max-attempts", "1", "--timeout", "20m")))
	state := func() taskJSON { return getTask(t, p, bin, id) }
	waitUntil(t, "the task running", readyWait, func() bool { return state().State == "STATE_RUNNING" })

	// 1 ms of CPU a second for the guest's vCPU (libvirt's minimum quota, longest period).
	sched := func(args ...string) { schedinfo(t, g, guest, args...) }
	sched("vcpu_period=1000000", "vcpu_quota=1000")
	starved := time.Now()
	time.Sleep(25 * time.Second)
	sched("vcpu_quota=-1")
	t.Logf("guest %s starved for %v", guest, time.Since(starved).Round(time.Millisecond))

	waitUntil(t, "the task to end", 10*time.Minute, func() bool {
		s := state().State
		return s != "STATE_RUNNING" && s != "STATE_LEASED" && s != "STATE_QUEUED"
	})
	log, err := os.ReadFile(filepath.Join(dir, "dev.log"))
	if err != nil {
		t.Fatal(err)
	}
	if tk := state(); tk.State != "STATE_SUCCEEDED" || len(tk.Attempts) != 1 {
		t.Fatalf("the starved guest's task ended %s after %d attempts (%s); want succeeded on its one attempt", tk.State, len(tk.Attempts), tk.Error)
	}
	if !strings.Contains(string(log), "agent silent, but its host reports its guest running") {
		t.Errorf("dev.log never says the host vouched for the silent agent: the guest was not starved long enough to test anything")
	}
	if strings.Contains(string(log), "agent missed its heartbeats; closing its session") {
		t.Errorf("the agent's session was closed while its guest was starved")
	}
}

// oneConnectedGuest waits for p's one guest to have its agent connected and returns
// its name.
func oneConnectedGuest(t *testing.T, p *devProc) string {
	t.Helper()
	api := paddockv1connect.NewClusterServiceClient(http.DefaultClient, p.api, connect.WithInterceptors(bearer(p.token)))
	var guest string
	waitUntil(t, "the guest's agent connected", readyWait, func() bool {
		r, err := api.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
		if err != nil || len(r.Msg.GetVms()) != 1 || r.Msg.GetVms()[0].GetAgent() != "connected" {
			return false
		}
		guest = r.Msg.GetVms()[0].GetName()
		return true
	})
	return guest
}

// getTask is task id as `paddock task get --json` shows it.
func getTask(t *testing.T, p *devProc, bin, id string) taskJSON {
	t.Helper()
	var tk taskJSON
	if err := json.Unmarshal(p.run(t, bin, "task", "get", id, "--json"), &tk); err != nil {
		t.Fatal(err)
	}
	return tk
}

// schedinfo sets the libvirt scheduler parameters of the running guest
// (`virsh schedinfo --live`): vcpu_period and vcpu_quota starve its vCPU.
func schedinfo(t *testing.T, g guestEnv, guest string, args ...string) {
	t.Helper()
	if out, err := exec.Command("virsh", append([]string{"-c", g.uri, "schedinfo", guest, "--live"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("virsh schedinfo %v: %v: %s", args, err, out)
	}
}

// TestStarvedGuestStartsItsTask: a task is sent to a guest already starved of host
// CPU (its vCPU cut to 1 % by libvirt's CPU quota), and the guest is given its CPU
// back after 60 s (six lease TTLs). The task, allowed a single attempt, must succeed
// on it. In such a guest the agent's heartbeats went out before it had read the task's
// Assign, so they did not list the task and did not renew its lease, and its host's
// vouching stopped as soon as the agent spoke: the lease lapsed about 30 s in
// (lease_expired, dead) although the agent was alive and the Assign on its way.
func TestStarvedGuestStartsItsTask(t *testing.T) {
	g := newGuestEnv(t)
	bin := binaries(t)
	dir := dataDir(t)
	p := startDev(t, g, bin, dir, "--guests", "1", "--max-guests", "1")
	guest := oneConnectedGuest(t, p)

	schedinfo(t, g, guest, "vcpu_period=1000000", "vcpu_quota=10000")
	id := strings.TrimSpace(string(p.run(t, bin, "task", "submit", "-q", "--type", "test.sleep", "--payload", "1s", "--max-attempts", "1", "--timeout", "20m")))
	time.Sleep(60 * time.Second)
	schedinfo(t, g, guest, "vcpu_quota=-1")

	var tk taskJSON
	waitUntil(t, "the task to end", 10*time.Minute, func() bool {
		tk = getTask(t, p, bin, id)
		return tk.State != "STATE_RUNNING" && tk.State != "STATE_LEASED" && tk.State != "STATE_QUEUED"
	})
	log, err := os.ReadFile(filepath.Join(dir, "dev.log"))
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != "STATE_SUCCEEDED" || len(tk.Attempts) != 1 {
		t.Fatalf("the task sent to a starved guest ended %s after %d attempts (%s); want succeeded on its one attempt", tk.State, len(tk.Attempts), tk.Error)
	}
	if !strings.Contains(string(log), "agent silent, but its host reports its guest running") {
		t.Errorf("dev.log never says the host vouched for the silent agent: the guest was not starved enough to test anything")
	}
}
