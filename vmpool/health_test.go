package vmpool

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
)

// sessionRelay is DrainRelay that says it reports sessions: the test reports them
// itself through Manager.SessionOpened and SessionClosed.
type sessionRelay struct{ DrainRelay }

func (sessionRelay) ReportsSessions() bool { return true }

var _ SessionReporter = sessionRelay{}

// goneLog records WithGuestGone calls.
type goneLog struct {
	mu sync.Mutex
	by map[string]string
}

func (l *goneLog) record(g GuestRef, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil {
		l.by = map[string]string{}
	}
	l.by[g.Name] = reason
}

func (l *goneLog) reason(name string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.by[name]
	return r, ok
}

// TestGuestSessionDeadline: with a relay that reports sessions, a ready guest whose
// agent opens no session within guest_session_timeout of its ready line, and one whose
// session stays down that long after it closed, are destroyed, reported gone with a
// reason naming the setting, and replaced (min_idle kept); a guest with a session open
// is kept however long; time is the pool's (fake) clock.
func TestGuestSessionDeadline(t *testing.T) {
	gone := &goneLog{}
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("hs", 1, 2)}, GuestSessionTimeout: 10 * time.Second},
		WithRelay(sessionRelay{}), WithGuestGone(gone.record))
	e.start()
	e.eventually("an idle guest", func() bool { return e.count("hs", StateIdle) == 1 })
	g1 := e.guestsIn("hs", StateIdle)[0]
	e.steady("the guest kept within the timeout", func() bool { return stateOf(e, g1) == StateIdle })
	e.clock.Advance(9 * time.Second)
	e.steady("the guest kept within the timeout", func() bool { return stateOf(e, g1) == StateIdle })

	e.clock.Advance(2 * time.Second)
	e.eventually("the sessionless guest destroyed", func() bool {
		_, err := e.hv.Lookup(context.Background(), g1)
		return errors.Is(err, hypervisor.ErrNotFound) && stateOf(e, g1) == ""
	})
	if r, ok := gone.reason(g1); !ok || !strings.Contains(r, "no session within guest_session_timeout") {
		t.Fatalf("%s reported gone with %q (%v), want the missing session named", g1, r, ok)
	}
	e.clock.Advance(2 * time.Second) // past the boot backoff: it never ran a task
	e.eventually("a replacement", func() bool { return e.count("hs", StateIdle) == 1 })
	g2 := e.guestsIn("hs", StateIdle)[0]

	e.m.SessionOpened(g2)
	e.clock.Advance(time.Hour)
	e.steady("a guest with a session kept", func() bool { return stateOf(e, g2) == StateIdle })
	e.m.SessionClosed(g2)
	e.clock.Advance(9 * time.Second)
	e.steady("a guest whose session just closed kept", func() bool { return stateOf(e, g2) == StateIdle })
	e.clock.Advance(2 * time.Second)
	e.eventually("the guest whose session stayed down destroyed", func() bool { return stateOf(e, g2) == "" })
	if r, _ := gone.reason(g2); !strings.Contains(r, "has had no session for guest_session_timeout 10s") {
		t.Fatalf("%s reported gone with %q, want the session down named", g2, r)
	}
	e.clock.Advance(2 * time.Second)
	e.eventually("min_idle kept", func() bool { return e.count("hs", StateIdle) == 1 })
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_guests_lost_total", map[string]string{"pool": "hs", "reason": "session"}); v != 2 {
		t.Errorf("guests_lost_total{reason=session} = %v, want 2", v)
	}
}

// TestNoSessionDeadlineWithoutReporter: DrainRelay reports no sessions, so no guest
// is destroyed for lacking one.
func TestNoSessionDeadlineWithoutReporter(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("nr", 1, 1)}, GuestSessionTimeout: 10 * time.Second})
	e.start()
	e.eventually("an idle guest", func() bool { return e.count("nr", StateIdle) == 1 })
	g := e.guestsIn("nr", StateIdle)[0]
	e.clock.Advance(time.Hour)
	e.steady("the guest kept", func() bool { return stateOf(e, g) == StateIdle })
}

func TestGuestSessionTimeoutValidated(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, time.Second} {
		err := Config{HostID: "h", RunDir: "/run/p", GuestSessionTimeout: d}.ValidateHost()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "guest_session_timeout") || !strings.Contains(err.Error(), "fix:") {
			t.Errorf("guest_session_timeout %v: %v, want an error naming the field and the fix", d, err)
		}
	}
	if err := (Config{HostID: "h", RunDir: "/run/p"}).ValidateHost(); err != nil {
		t.Errorf("default guest_session_timeout: %v", err)
	}
}
