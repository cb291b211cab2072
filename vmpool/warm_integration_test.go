package vmpool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/vmpool/hostload"
)

func waitSnapshot(t *testing.T, e *realEnv, want string, within time.Duration) {
	t.Helper()
	waitFor(t, e, "snapshot "+want, within, func() bool { return e.m.Pools()[0].Snapshot == want })
}

// TestRealWarmStart: a pool with warm_start snapshot saves a template, then restores
// three guests from it on a backlog: each is idle with its own name and a different
// nonce. Then the state file's header is overwritten (same size, so only QEMU can
// notice): the next guest's restore fails half way, it boots cold instead with a
// warning, the snapshot is dropped, and the pool is back to the guests it wants.
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -run TestRealWarmStart -v ./vmpool
func TestRealWarmStart(t *testing.T) {
	e := startReal(t, PoolConfig{VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 4, IdleTimeout: time.Hour, WarmStart: WarmSnapshot,
		BootTimeout: 2 * bootWait}, hostload.Thresholds{})
	waitSnapshot(t, e, "ready", 2*bootWait)

	e.backlog.Set("checksum", 3)
	waitFor(t, e, "three idle guests", bootWait, func() bool { return len(e.idle()) == 3 })
	nonces := map[string]string{}
	for _, g := range e.idle() {
		if !g.Restored || g.Nonce == "" {
			t.Errorf("guest %s: restored=%v nonce=%q, want restored with a nonce", g.Name, g.Restored, g.Nonce)
		}
		if other, dup := nonces[g.Nonce]; dup {
			t.Errorf("guests %s and %s drew the same nonce %s", other, g.Name, g.Nonce)
		}
		nonces[g.Nonce] = g.Name
		t.Logf("restored %s in %v, nonce %s", g.Name, g.BootTime, g.Nonce)
	}

	// Corrupt the state behind the manifest's back: same size, broken header.
	state := filepath.Join(e.m.cfg.SnapshotDir, e.pool, stateFile)
	f, err := os.OpenFile(state, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("NOT A QEMU STATE"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.backlog.Set("checksum", 4)
	waitFor(t, e, "a fourth idle guest", 2*bootWait, func() bool { return len(e.idle()) == 4 })
	var cold []string
	for _, g := range e.idle() {
		if !g.Restored {
			cold = append(cold, g.Name)
		}
	}
	if len(cold) != 1 {
		t.Errorf("cold-booted guests %v, want exactly the one after the corruption", cold)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "restore failed; booting this guest cold") {
		t.Errorf("log lacks the fallback warning")
	}
	if st := e.m.Pools()[0].Snapshot; st == "ready" {
		// Only a rebuilt snapshot may be ready again: the corrupt one must be gone.
		if b, err := os.ReadFile(state); err == nil && strings.HasPrefix(string(b), "NOT A QEMU STATE") {
			t.Errorf("the corrupt snapshot is still in use")
		}
	}
}
