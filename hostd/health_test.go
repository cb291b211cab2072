package hostd_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/vmpool"
)

var quiet struct {
	once sync.Once
	img  images.Image
	err  error
}

// quietImage builds (once) an image of the real paddock-agent with no handlers: its
// agent writes the ready line and then, having nothing to serve, never opens a session
// (agent.Run), while the guest keeps running.
func quietImage(t testing.TB) (*images.Store, images.Image) {
	t.Helper()
	store, _ := realImage(t)
	quiet.once.Do(func() {
		quiet.img, quiet.err = store.Build(context.Background(), images.Spec{Agent: shared.agent})
	})
	if quiet.err != nil {
		t.Fatalf("building the handler-less test image: %v", quiet.err)
	}
	return store, quiet.img
}

// TestGuestWithoutSessionReplaced: a real guest whose agent writes its ready line but
// opens no session is destroyed after host.guest_session_timeout (15s here), reported
// gone to the server (which logs it), and replaced, so the pool keeps min_idle.
func TestGuestWithoutSessionReplaced(t *testing.T) {
	pool := "hq" + randHex(2)
	e := startWith(t, options{img: quietImage, sessionTimeout: 15 * time.Second,
		// A long boot_timeout: under TCG on a loaded 2-core machine a boot has taken 3 minutes.
		pools: []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: time.Minute, BootTimeout: 8 * time.Minute}}})
	var g1 string
	e.waitFor("a ready guest", 2*bootWait+time.Minute, func() bool {
		for _, g := range e.guests(pool) {
			if g.State == vmpool.StateIdle {
				g1 = g.Name
			}
		}
		return g1 != ""
	})
	e.waitFor("the sessionless guest destroyed", 3*time.Minute, func() bool {
		_, err := e.hv.Lookup(context.Background(), g1)
		return errors.Is(err, hypervisor.ErrNotFound)
	})
	e.waitFor("the server told the guest is gone", time.Minute, func() bool {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, "guest gone") && strings.Contains(l, "guest="+g1) && strings.Contains(l, "guest_session_timeout") {
				return true
			}
		}
		return false
	})
	e.waitFor("a replacement ready (min_idle kept)", 2*bootWait+time.Minute, func() bool {
		for _, g := range e.guests(pool) {
			if g.Name != g1 && g.State == vmpool.StateIdle {
				return true
			}
		}
		return false
	})
	if !strings.Contains(e.logs.String(), "no session within guest_session_timeout 15s") {
		t.Errorf("no log line names the missing session:\n%s", e.logs.String())
	}
}
