package vmpool

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startingNow counts the pool's guests that are starting: a domain exists in libvirt
// and the pool still has the guest booting. The list is taken before the snapshot, so
// every guest counted had its domain created before the snapshot and was not ready at
// the snapshot: it held a start slot then (a slot is taken before the domain is created
// and given back only after the guest is marked ready or stopping). waiting counts the
// booting guests without a domain.
func (e *realEnv) startingNow(t *testing.T) (starting, waiting int, doms []string) {
	t.Helper()
	list, err := e.hv.List(context.Background())
	if err != nil {
		t.Fatalf("listing domains: %v", err)
	}
	present := map[string]bool{}
	for _, d := range list {
		if d.Labels[LabelHost] == e.hostID && d.Labels[LabelPool] == e.pool {
			present[d.Name] = true
		}
	}
	for _, g := range e.m.Snapshot() {
		if g.State != StateBooting {
			continue
		}
		if present[g.Name] {
			starting++
			doms = append(doms, g.Name)
		} else {
			waiting++
		}
	}
	return starting, waiting, doms
}

// TestRealMaxConcurrentStarts: a pool with min_idle 4 on a host with
// max_concurrent_starts 2, on real libvirt (TCG): at no moment do more than two of its
// guests have a domain while still booting, the others wait without one, and all
// four end up ready.
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -run TestRealMaxConcurrentStarts -v ./vmpool
func TestRealMaxConcurrentStarts(t *testing.T) {
	const limit = 2
	e := startRealCfg(t, PoolConfig{VCPUs: 1, MemoryMiB: 256, MinIdle: 4, Max: 4, IdleTimeout: time.Hour}, func(c *Config) { c.MaxConcurrentStarts = limit })
	peak, sawWaiting, samples := 0, 0, 0
	deadline := time.Now().Add(2 * bootWait)
	for len(e.idle()) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for four ready guests; guests %+v\nlog:\n%s", brief(e.m.Snapshot()), e.logs.String())
		}
		n, w, doms := e.startingNow(t)
		samples++
		peak = max(peak, n)
		if w > 0 {
			sawWaiting++
		}
		if n > limit {
			t.Fatalf("%d guests starting at once (%v), max_concurrent_starts is %d", n, doms, limit)
		}
		if v, _ := metricValue(t, e.reg, "paddock_vmpool_starts_in_flight", nil); v > limit {
			t.Fatalf("paddock_vmpool_starts_in_flight = %v, more than %d", v, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d samples: at most %d guests starting at once; %d samples with guests waiting for a slot", samples, peak, sawWaiting)
	if peak < 1 {
		t.Errorf("never saw a guest starting in %d samples", samples)
	}
	if !strings.Contains(e.logs.String(), "guest waits for a start slot") {
		t.Errorf("no guest waited for a start slot: the limit was never reached")
	}
	for _, g := range e.idle() {
		if g.AgentVersion == "" {
			t.Errorf("guest %s is idle without an agent version from its ready line", g.Name)
		}
	}
}

// TestRealWarmRestartUsesSnapshotOnDisk: a daemon (a Manager) with warm_start snapshot
// makes its snapshot and stops; a new Manager with the same host id, pool and snapshot
// directory (a restarted daemon) restores its first min_idle guests from that snapshot
// without booting a template. Then the state file is corrupted behind the manifest's
// back (same size): the next restart refuses the snapshot at start with a warning,
// boots its guest cold and makes a new snapshot.
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -run TestRealWarmRestartUsesSnapshotOnDisk -v ./vmpool
func TestRealWarmRestartUsesSnapshotOnDisk(t *testing.T) {
	snapDir := mkQEMUDir(t, "pdvmp-snap-")
	t.Cleanup(func() { os.RemoveAll(snapDir) })
	pool, hostID := "vmr"+randHex(2), "vmpool-test-"+randHex(4)
	run := func(minIdle int) *realEnv {
		return startRealCfg(t, PoolConfig{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: minIdle, Max: 2, IdleTimeout: time.Hour,
			WarmStart: WarmSnapshot, BootTimeout: 2 * bootWait}, func(c *Config) { c.HostID, c.SnapshotDir = hostID, snapDir })
	}

	first := run(0)
	waitSnapshot(t, first, "ready", 2*bootWait)
	first.stop()

	second := run(2)
	waitFor(t, second, "two idle guests after the restart", bootWait, func() bool { return len(second.idle()) == 2 })
	for _, g := range second.idle() {
		if !g.Restored || g.Nonce == "" {
			t.Errorf("guest %s after the restart: restored=%v nonce=%q, want restored from the snapshot on disk", g.Name, g.Restored, g.Nonce)
		}
		t.Logf("after the restart: %s restored in %v", g.Name, g.BootTime)
	}
	logs := second.logs.String()
	if !strings.Contains(logs, "using the snapshot on disk from the first guest") {
		t.Errorf("the restarted pool did not log taking the snapshot on disk")
	}
	if strings.Contains(logs, "booting a template guest") {
		t.Errorf("the restarted pool booted a template although a valid snapshot was on disk")
	}
	second.stop()

	// Corrupt the state in its middle, keeping its size.
	state := filepath.Join(snapDir, pool, stateFile)
	f, err := os.OpenFile(state, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("CORRUPTED BY THE TEST"), fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	third := run(1)
	waitFor(t, third, "an idle guest after the restart with a corrupt snapshot", 2*bootWait, func() bool { return len(third.idle()) == 1 })
	if g := third.idle()[0]; g.Restored {
		t.Errorf("guest %s was restored from a corrupt snapshot", g.Name)
	}
	if logs := third.logs.String(); !strings.Contains(logs, "the snapshot on disk cannot be used; guests boot cold") || !strings.Contains(logs, "corrupt") {
		t.Errorf("no warning naming the corrupt snapshot on disk")
	}
	waitSnapshot(t, third, "ready", 2*bootWait)
	if b, err := os.ReadFile(state); err != nil || strings.Contains(string(b), "CORRUPTED BY THE TEST") {
		t.Errorf("the rebuilt snapshot: %v, or it still holds the corruption", err)
	}
}
