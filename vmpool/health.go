package vmpool

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultGuestSessionTimeout is Config.GuestSessionTimeout's default.
const DefaultGuestSessionTimeout = time.Minute

// SessionReporter is a Relay that tells the Manager when each guest's agent opens
// and closes a session through it (Manager.SessionOpened, SessionClosed);
// hostd.Daemon is one. Only with such a relay does the Manager enforce
// Config.GuestSessionTimeout (DrainRelay sees no sessions, so it is not one).
type SessionReporter interface {
	Relay
	// ReportsSessions reports whether the relay calls SessionOpened and SessionClosed.
	ReportsSessions() bool
}

// sessionState is one ready guest's agent session as the relay reported it.
type sessionState struct {
	open      int       // sessions open now
	ever      bool      // a session was opened since the guest was ready
	downSince time.Time // pool clock: when the last session closed, or when the guest was first seen ready
}

// sessions holds the session state of the Manager's guests, by guest name.
type sessions struct {
	mu sync.Mutex // guards by
	by map[string]*sessionState
}

// SessionOpened records that guest name's agent opened a session through the relay
// (a SessionReporter calls it when the guest's agent starts one).
func (m *Manager) SessionOpened(name string) {
	m.sess.mu.Lock()
	defer m.sess.mu.Unlock()
	st := m.sess.get(name, m.clock.Now())
	st.open++
	st.ever = true
}

// SessionClosed records that one of guest name's agent sessions ended.
func (m *Manager) SessionClosed(name string) {
	m.sess.mu.Lock()
	defer m.sess.mu.Unlock()
	st := m.sess.get(name, m.clock.Now())
	if st.open > 0 {
		st.open--
	}
	if st.open == 0 {
		st.downSince = m.clock.Now()
	}
}

// get returns name's state, made with downSince now if there is none. Caller holds mu.
func (s *sessions) get(name string, now time.Time) *sessionState {
	if s.by == nil {
		s.by = map[string]*sessionState{}
	}
	st := s.by[name]
	if st == nil {
		st = &sessionState{downSince: now}
		s.by[name] = st
	}
	return st
}

// healthLoop checks every Tick, when the relay reports sessions, that each ready
// guest's agent has a session, or had one within GuestSessionTimeout.
func (m *Manager) healthLoop(ctx context.Context) {
	if r, ok := m.relay.(SessionReporter); !ok || !r.ReportsSessions() {
		return
	}
	every(ctx, m.cfg.Tick, m.checkSessions)
}

// every calls f every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f()
	}
}

// checkSessions destroys (and so reports gone, and replaces) every ready guest whose
// agent has had no session for GuestSessionTimeout: none since its ready line, or none
// since its last one closed, while its domain still runs (a guest that stops is
// handled by the lifecycle events). It forgets the state of guests no pool has.
func (m *Manager) checkSessions() {
	now := m.clock.Now()
	live := map[string]bool{}
	for _, p := range m.pools {
		p.mu.Lock()
		for name, g := range p.guests {
			if g.state == StateBooting || g.state == StateStopping {
				continue
			}
			live[name] = true
			m.sess.mu.Lock()
			st := m.sess.get(name, now)
			down, ever := st.open == 0 && now.Sub(st.downSince) >= m.cfg.GuestSessionTimeout, st.ever
			m.sess.mu.Unlock()
			if !down {
				continue
			}
			reason := fmt.Sprintf("unhealthy: its agent opened no session within guest_session_timeout %v of its ready line", m.cfg.GuestSessionTimeout)
			if ever {
				reason = fmt.Sprintf("unhealthy: its agent has had no session for guest_session_timeout %v while the guest runs", m.cfg.GuestSessionTimeout)
			}
			if g.started == 0 {
				p.backoffLocked("health", fmt.Errorf("%s", reason), name)
			}
			p.m.met.lost.WithLabelValues(p.cfg.Name, "session").Inc()
			p.log.Warn("guest lost", "guest", name, "reason", reason, "state", g.state, "running_tasks", g.running)
			p.stopGuest(g, reason)
			p.nudge()
		}
		p.mu.Unlock()
	}
	m.sess.mu.Lock()
	for name := range m.sess.by {
		if !live[name] {
			delete(m.sess.by, name)
		}
	}
	m.sess.mu.Unlock()
}

// MinGuestSessionTimeout is the least Config.GuestSessionTimeout ValidateHost accepts:
// an agent whose session fails redials at least every 5 s (agent/session), and the
// relay pauses a second when the server is unreachable, so a live agent never looks
// dead for longer than that, even while the server is down.
const MinGuestSessionTimeout = 10 * time.Second
