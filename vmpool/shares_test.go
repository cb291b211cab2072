package vmpool

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/hypervisor/hypervisortest"
)

// specHV is the Fake hypervisor, remembering the spec of every domain created.
type specHV struct {
	*hypervisortest.Fake
	mu    sync.Mutex // guards specs
	specs map[string]hypervisor.DomainSpec
}

func (h *specHV) Create(ctx context.Context, spec hypervisor.DomainSpec) (hypervisor.Domain, error) {
	h.mu.Lock()
	h.specs[spec.Name] = spec
	h.mu.Unlock()
	return h.Fake.Create(ctx, spec)
}

// runShares runs a manager with one pool of one warm guest over specHV and returns
// the guest's reference once it is idle; stop ends Run.
func runShares(t *testing.T, cfg Config) (m *Manager, g GuestRef, hv *specHV, stop func()) {
	t.Helper()
	dir := t.TempDir()
	store, img := fakeImage(t, dir, "echo")
	hv = &specHV{Fake: hypervisortest.New("paddock-"), specs: map[string]hypervisor.DomainSpec{}}
	cfg.HostID, cfg.RunDir, cfg.Tick = "host-test", filepath.Join(dir, "run"), 5*time.Millisecond
	pc := poolCfg("sh", 1, 1)
	pc.Image = img.Digest
	cfg.Pools = []PoolConfig{pc}
	m, err := New(cfg, hv, store, WithConnector(&fakeConnector{}), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap := m.Snapshot()
		if len(snap) == 1 && snap[0].State == StateIdle {
			var ok bool
			if g, ok = m.Guest(snap[0].Name); !ok {
				t.Fatalf("Guest(%s) does not find an idle guest", snap[0].Name)
			}
			return m, g, hv, stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no idle guest: %+v", snap)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestGuestShares: every guest gets an input share (0755) and an output share (QEMU's
// user's when the daemon is root, else 0777) in its directory, exported read-only and
// writable under the guestabi tags; Guest returns their paths; they go with the guest.
func TestGuestShares(t *testing.T) {
	m, g, hv, stop := runShares(t, Config{})
	dir := filepath.Dir(g.Socket)
	if g.InDir != filepath.Join(dir, "in") || g.OutDir != filepath.Join(dir, "out") {
		t.Fatalf("GuestRef %+v: shares not in the guest's directory %s", g, dir)
	}
	in, err := os.Stat(g.InDir)
	if err != nil || !in.IsDir() || in.Mode().Perm() != 0o755 {
		t.Errorf("input share: %v %v, want a 0755 directory", in, err)
	}
	out, err := os.Stat(g.OutDir)
	if err != nil || !out.IsDir() {
		t.Fatalf("output share: %v %v", out, err)
	}
	if m.shareOwner != nil {
		o, _ := lookupShareOwner(DefaultShareUser)
		if out.Mode().Perm() != 0o700 {
			t.Errorf("output share mode %v, want 0700 owned by %s (%+v)", out.Mode().Perm(), DefaultShareUser, o)
		}
		if uid, gid := fileOwner(out); uid != o.uid || gid != o.gid {
			t.Errorf("output share owned by %d:%d, want %s (%d:%d)", uid, gid, DefaultShareUser, o.uid, o.gid)
		}
	} else if out.Mode().Perm() != 0o777 {
		t.Errorf("output share mode %v, want 0777 without QEMU's user", out.Mode().Perm())
	}
	hv.mu.Lock()
	fss := hv.specs[g.Name].Filesystems
	hv.mu.Unlock()
	want := []hypervisor.Filesystem{{Source: g.InDir, Tag: "paddock.in", ReadOnly: true}, {Source: g.OutDir, Tag: "paddock.out"}}
	if len(fss) != 2 || fss[0] != want[0] || fss[1] != want[1] {
		t.Errorf("domain filesystems %+v, want %+v", fss, want)
	}
	if _, ok := m.Guest("paddock-sh-nothere"); ok {
		t.Error("Guest found a guest that does not exist")
	}
	stop()
	if _, err := os.Stat(g.InDir); !os.IsNotExist(err) {
		t.Errorf("input share still there after the guest went: %v", err)
	}
	if _, ok := m.Guest(g.Name); ok {
		t.Error("Guest still finds a destroyed guest")
	}
}

// TestSharesDisabled: with disable_shares, guests have no shares and no devices.
func TestSharesDisabled(t *testing.T) {
	_, g, hv, stop := runShares(t, Config{DisableShares: true})
	defer stop()
	if g.InDir != "" || g.OutDir != "" {
		t.Errorf("GuestRef %+v has shares", g)
	}
	hv.mu.Lock()
	fss := hv.specs[g.Name].Filesystems
	hv.mu.Unlock()
	if len(fss) != 0 {
		t.Errorf("domain filesystems %+v with shares disabled", fss)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(g.Socket), "in")); !os.IsNotExist(err) {
		t.Errorf("an input share exists: %v", err)
	}
}

func fileOwner(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}
