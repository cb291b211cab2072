package hostd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/api/guestabi"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// TestWarmStartTenClones: a pool with warm_start snapshot saves a template once; ten
// tasks on a pool with max_tasks_per_vm 1 then run in ten guests restored from that
// one snapshot. Each registers with the server under its own guest name (the server
// attests it), reports a different nonce drawn after its RNG was reseeded, and returns
// its task's payload unchanged.
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -run TestWarmStartTenClones -v ./hostd
func TestWarmStartTenClones(t *testing.T) {
	pool := "ws" + randHex(2)
	e := start(t, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 10, IdleTimeout: time.Minute,
		MaxTasksPerVM: 1, TaskTypes: []string{"test.echo"}, WarmStart: vmpool.WarmSnapshot, BootTimeout: templateWait}}, hostload.Thresholds{})
	e.waitSnapshot(pool)

	// Record every guest's warm-start facts while it lives (each runs one task, then
	// it is recycled).
	var (
		mu   sync.Mutex
		seen = map[string]vmpool.GuestInfo{}
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			for _, g := range e.d.Manager().Snapshot() {
				if g.Pool == pool && g.State != vmpool.StateBooting && g.AgentVersion != "" {
					mu.Lock()
					if _, ok := seen[g.Name]; !ok {
						seen[g.Name] = g
					}
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	const n = 10
	ids := map[string]string{}
	for i := range n {
		payload := fmt.Sprintf("clone-%d-%s", i, randHex(4))
		ids[e.submit("test.echo", payload)] = payload
	}
	agents := map[string]string{}
	for id, payload := range ids {
		got := e.wait(id, 8*time.Minute)
		if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("task %s: %v", id, got)
		}
		if string(got.GetOutput()) != payload {
			t.Errorf("task %s returned %q, want %q", id, got.GetOutput(), payload)
		}
		if prev, dup := agents[got.GetAgentId()]; dup {
			t.Errorf("tasks %s and %s both ran in agent %s (max_tasks_per_vm 1)", prev, id, got.GetAgentId())
		}
		agents[got.GetAgentId()] = id
	}
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	nonces := map[string]string{}
	for agent := range agents {
		g, ok := seen[agent]
		if !ok {
			t.Errorf("agent %s ran a task but was never seen as a ready guest of pool %s", agent, pool)
			continue
		}
		if !g.Restored || g.Nonce == "" {
			t.Errorf("guest %s was not restored from the snapshot (restored=%v nonce=%q)", agent, g.Restored, g.Nonce)
			continue
		}
		if other, dup := nonces[g.Nonce]; dup {
			t.Errorf("guests %s and %s drew the same nonce %s after restore", other, agent, g.Nonce)
		}
		nonces[g.Nonce] = agent
		t.Logf("guest %s restored, boot_time %v, nonce %s", agent, g.BootTime, g.Nonce)
	}
	if len(agents) != n {
		t.Errorf("%d distinct agents ran the %d tasks, want %d", len(agents), n, n)
	}
}

// templateWait bounds the template's boot (its pool's boot_timeout) and the wait for
// its snapshot: on a loaded 2-core machine (load average 30–40) a TCG boot took 5 to over 10 minutes.
const templateWait = 15 * time.Minute

// waitSnapshot waits until pool's warm-start snapshot is ready.
func (e *env) waitSnapshot(pool string) {
	e.waitFor("pool "+pool+"'s snapshot", templateWait+time.Minute, func() bool {
		for _, p := range e.d.Manager().Pools() {
			if p.Name == pool && p.Snapshot == "ready" {
				return true
			}
		}
		return false
	})
}

// decisionToRegistered submits one task of typ to a pool with min_idle 0, max 1 and
// max_tasks_per_vm 1, and returns the time from the pool's scale-up decision (the
// guest's Created) to its agent being connected to the server (as seen by polling the
// server), the decision → ready line time, and whether the guest was restored. It waits
// for the task and for the recycled guest to be gone.
func (e *env) decisionToRegistered(pool, typ, payload string) (reg, ready time.Duration, restored bool) {
	e.t.Helper()
	return e.awaitRegistered(pool, e.submit(typ, payload))
}

// awaitRegistered is the second half of decisionToRegistered, for a task id already
// submitted.
func (e *env) awaitRegistered(pool, id string) (reg, ready time.Duration, restored bool) {
	e.t.Helper()
	e.waitFor("a registered guest in "+pool, templateWait, func() bool {
		ags := e.agents()
		for _, g := range e.guests(pool) {
			if a := ags[g.Name]; a != nil && a.GetState() == "connected" {
				reg, ready, restored = time.Since(g.Created), g.BootTime, g.Restored
				return true
			}
		}
		return false
	})
	if got := e.wait(id, 5*time.Minute); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		e.t.Fatalf("task %s: %v", id, got)
	}
	e.waitFor("the recycled guest gone", time.Minute, func() bool { return len(e.guests(pool)) == 0 })
	return reg, ready, restored
}

// rawRestore restores the pool's snapshot with the hypervisor package alone (no pool,
// no server): a domain of the same devices, then the identity line, timing restore
// start → the agent's second ready line.
func (e *env) rawRestore(pool string) time.Duration {
	e.t.Helper()
	dir := filepath.Join(e.runDir, ".snapshots", pool)
	var man struct {
		Template string `json:"template"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &man); err != nil {
		e.t.Fatal(err)
	}
	name := e.hv.Prefix() + "rawr-" + randHex(4)
	gdir := qemuDir(e.t, "pdrr-")
	defer os.RemoveAll(gdir)
	in, out := filepath.Join(gdir, "in"), filepath.Join(gdir, "out")
	for _, d := range []string{in, out} {
		if err := os.Mkdir(d, 0o777); err != nil {
			e.t.Fatal(err)
		}
		os.Chmod(d, 0o777)
	}
	spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256, Kernel: e.img.Kernel(), Initrd: e.img.Initrd(), Cmdline: man.Template,
		Filesystems: []hypervisor.Filesystem{{Source: in, Tag: guestabi.InTag, ReadOnly: true}, {Source: out, Tag: guestabi.OutTag}},
		Channels:    []hypervisor.Channel{{Name: agent.DefaultPort, SocketPath: filepath.Join(gdir, "agent.sock")}},
		ConsoleLog:  filepath.Join(gdir, "console.log"),
	}
	if d, ok := vmpool.HandlerDisk(e.img, "vda"); ok { // as the pool attached it to the template
		spec.Disks = []hypervisor.Disk{d}
	}
	ident, err := agent.NewIdentity(name)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootWait)
	defer cancel()
	t0 := time.Now()
	if _, err := e.hv.Restore(ctx, spec, filepath.Join(dir, "state")); err != nil {
		e.t.Fatal(err)
	}
	defer e.hv.Destroy(context.Background(), name)
	conn, info, err := vmpool.SocketConnector{}.WaitReadyAs(ctx, vmpool.GuestRef{Name: name, Socket: filepath.Join(gdir, "agent.sock")}, ident)
	if err != nil {
		e.t.Fatal(err)
	}
	d := time.Since(t0)
	conn.Close()
	if info.ID != name {
		e.t.Fatalf("raw restore: ready line names %q", info.ID)
	}
	return d
}

// BenchmarkWarmStart: scale-up decision → agent registered with the server for a guest
// restored from a snapshot and for a cold-booted one (two pools of the same image in
// the same daemon, one task each per iteration), and a raw restore of the same
// snapshot with the hypervisor package alone → the agent's ready line, beside the
// pool's own decision → ready line for its restored guest.
//
//	sudo go test ./hostd/ -run '^$' -bench WarmStart -benchtime 3x
func BenchmarkWarmStart(b *testing.B) {
	cold, warm := "bc"+randHex(2), "bw"+randHex(2)
	e := start(b, []vmpool.PoolConfig{
		{Name: cold, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 1, IdleTimeout: time.Minute, MaxTasksPerVM: 1, TaskTypes: []string{"test.echo"}, BootTimeout: templateWait},
		{Name: warm, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 1, IdleTimeout: time.Minute, MaxTasksPerVM: 1, TaskTypes: []string{"test.sleep"}, WarmStart: vmpool.WarmSnapshot, BootTimeout: templateWait},
	}, hostload.Thresholds{})
	// The first cold guest boots while the template does (on a loaded TCG host each takes
	// minutes); its decision → registered is measured all the same, while waiting.
	first := e.submit("test.echo", "x")
	var coldT, warmT, rawT, warmReady time.Duration
	e.waitFor("pool "+warm+"'s snapshot and a registered guest in "+cold, templateWait+time.Minute, func() bool {
		if coldT == 0 {
			ags := e.agents()
			for _, g := range e.guests(cold) {
				if a := ags[g.Name]; a != nil && a.GetState() == "connected" {
					coldT = time.Since(g.Created)
				}
			}
		}
		ready := false
		for _, p := range e.d.Manager().Pools() {
			ready = ready || p.Name == warm && p.Snapshot == "ready"
		}
		return coldT != 0 && ready
	})
	if got := e.wait(first, 5*time.Minute); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		b.Fatalf("task %s: %v", first, got)
	}
	e.waitFor("the recycled cold guest gone", time.Minute, func() bool { return len(e.guests(cold)) == 0 })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, ready, restored := e.decisionToRegistered(warm, "test.sleep", "1ms")
		if !restored {
			b.Fatalf("the warm pool booted a guest cold; pools %+v", e.d.Manager().Pools())
		}
		warmT += d
		warmReady += ready
		rawT += e.rawRestore(warm)
		if i > 0 {
			d, _, restored = e.decisionToRegistered(cold, "test.echo", "x")
			if restored {
				b.Fatal("the cold pool restored a guest")
			}
			coldT += d
		}
	}
	b.StopTimer()
	n := time.Duration(b.N)
	b.ReportMetric((coldT / n).Seconds(), "s/cold-decision-to-registered")
	b.ReportMetric((warmT / n).Seconds(), "s/restored-decision-to-registered")
	b.ReportMetric(float64(warmT)/float64(coldT), "restored/cold")
	b.ReportMetric((warmReady / n).Seconds(), "s/restored-decision-to-ready")
	b.ReportMetric((rawT / n).Seconds(), "s/raw-restore-to-ready")
	b.ReportMetric(float64(warmReady)/float64(rawT), "restored/raw")
}
