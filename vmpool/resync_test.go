package vmpool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/paddockvm/paddock/hypervisor"
)

// TestLeftoversReportedGone: at start, a leftover domain of this host (destroyed) and
// the directory of a guest whose domain died while the daemon was down are both
// reported through WithGuestGone, with the pool and a reason saying the daemon
// restarted; another host's guest is not.
func TestLeftoversReportedGone(t *testing.T) {
	var mu sync.Mutex
	gone := map[string]string{}
	pools := map[string]string{}
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("lo", 0, 1)}}, WithGuestGone(func(g GuestRef, reason string) {
		mu.Lock()
		defer mu.Unlock()
		gone[g.Name], pools[g.Name] = reason, g.Pool
	}))
	for name, host := range map[string]string{"paddock-lo-11111111": "host-test", "paddock-lo-22222222": "another-host"} {
		spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 128, Kernel: e.img.Kernel(), Initrd: e.img.Initrd(),
			Labels: map[string]string{LabelPool: "lo", LabelHost: host}}
		if _, err := e.hv.Create(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { e.hv.Destroy(context.Background(), "paddock-lo-22222222") })
	for _, d := range []string{"paddock-lo-11111111", "paddock-lo-33333333"} {
		if err := os.MkdirAll(filepath.Join(e.runDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	e.eventually("both leftovers reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gone) >= 2
	})
	e.stop()
	mu.Lock()
	defer mu.Unlock()
	if len(gone) != 2 {
		t.Fatalf("reported %v, want exactly the two guests of this host", gone)
	}
	if r := gone["paddock-lo-11111111"]; !strings.Contains(r, "restarted") || !strings.Contains(r, "destroyed") {
		t.Errorf("leftover domain reported with %q, want a reason saying the restarted daemon destroyed it", r)
	}
	if r := gone["paddock-lo-33333333"]; !strings.Contains(r, "restarted") || !strings.Contains(r, "gone") {
		t.Errorf("dead guest's directory reported with %q, want a reason saying it was found gone", r)
	}
	for n, p := range pools {
		if p != "lo" {
			t.Errorf("%s reported in pool %q, want lo", n, p)
		}
	}
	if _, err := e.hv.Lookup(context.Background(), "paddock-lo-11111111"); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Errorf("leftover domain not destroyed: %v", err)
	}
}

// TestSyncTasks: the server's snapshot replaces the per-guest task counts: a busy
// guest the snapshot shows without tasks becomes idle, an idle one with tasks busy;
// the assigned count drains a guest at max_tasks_per_vm, and a draining guest without
// tasks is recycled.
func TestSyncTasks(t *testing.T) {
	c := poolCfg("sy", 2, 3)
	c.MaxTasksPerVM = 3
	e := newEnv(t, Config{Pools: []PoolConfig{c}})
	e.start()
	e.eventually("two idle guests", func() bool { return e.count("sy", StateIdle) == 2 })
	idle := e.guestsIn("sy", StateIdle)
	g1, g2 := idle[0], idle[1]
	if err := e.m.TaskStarted(g1); err != nil { // a FINISHED for it is "lost"
		t.Fatal(err)
	}

	e.m.SyncTasks(map[string]int{g2: 2}, map[string]int{g1: 1, g2: 2})
	if s1, s2 := stateOf(e, g1), stateOf(e, g2); s1 != StateIdle || s2 != StateBusy {
		t.Fatalf("after the first snapshot: %s %s, %s %s; want idle, busy", g1, s1, g2, s2)
	}
	if err := e.m.TaskFinished(g1); !errors.Is(err, ErrState) {
		t.Errorf("TaskFinished on %s, which the snapshot says runs nothing: %v, want ErrState", g1, err)
	}
	for _, g := range e.m.Snapshot() {
		if g.Name == g2 && (g.Running != 2 || g.TasksRun != 2) {
			t.Errorf("%s: running %d, tasks run %d; want 2, 2", g2, g.Running, g.TasksRun)
		}
	}

	e.m.SyncTasks(map[string]int{g2: 1}, map[string]int{g1: 1, g2: 3})
	if s := stateOf(e, g2); s != StateDraining {
		t.Fatalf("%s with 3 tasks assigned (max_tasks_per_vm 3) is %s, want draining", g2, s)
	}
	e.m.SyncTasks(map[string]int{}, map[string]int{g1: 1, g2: 3})
	e.eventually("the drained guest recycled", func() bool {
		_, err := e.hv.Lookup(context.Background(), g2)
		return errors.Is(err, hypervisor.ErrNotFound) && stateOf(e, g2) == ""
	})
	if s := stateOf(e, g1); s != StateIdle {
		t.Errorf("%s is %s, want idle", g1, s)
	}
}
