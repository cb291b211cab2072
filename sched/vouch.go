package sched

import (
	"context"
	"strings"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Host-vouched liveness. An agent silent for AgentTimeout is lost: its session is
// closed and its tasks requeued, each charged an attempt. On a host whose CPUs are
// oversubscribed (many TCG guests, or a burst of handler starts in every guest at
// once) a guest's vCPU can go without CPU for longer than that while the guest is
// perfectly alive; its tasks then die after three expired leases although nothing
// failed. The guest's host daemon sees what the server cannot: the domain still runs
// and its CPU time still rises. While it says so (hostRegistry.vouched), a silent
// relayed agent keeps its session and its leases for up to VouchedTimeout; a guest
// whose host reports it gone still ends at once (GuestGone), and agents on the agent
// port (no host) are never vouched for.

// vouchedFor reports whether a, silent for silent (past AgentTimeout), is kept: its
// host vouches for its guest and VouchedTimeout has not passed. It logs and counts the
// first vouch of a silence. Caller holds s.agents.mu.
func (s *Server) vouchedFor(a *agent, silent time.Duration, now time.Time) bool {
	if s.cfg.VouchedTimeout <= 0 || a.hostID == "" || a.gone {
		return false
	}
	if silent > s.cfg.VouchedTimeout {
		s.log.Warn("agent silent past server.vouched_timeout: its host's word no longer keeps it", "agent", a.id, "host", a.hostID,
			"silent", silent.Round(time.Millisecond), "vouched_timeout", s.cfg.VouchedTimeout)
		return false
	}
	if ok, why := s.hosts.vouch(a.hostID, a.id, now, 2*s.cfg.AgentTimeout); !ok {
		s.log.Warn("agent silent, and its host does not vouch for it", "agent", a.id, "host", a.hostID, "silent", silent.Round(time.Millisecond), "why", why)
		return false
	}
	if a.vouchedSince.IsZero() {
		a.vouchedSince = now
		s.metrics.vouched.Inc()
		s.log.Warn("agent silent, but its host reports its guest running and using CPU (starved of CPU?): keeping its session and leases",
			"agent", a.id, "host", a.hostID, "silent", silent.Round(time.Millisecond), "up_to", s.cfg.VouchedTimeout)
	}
	return true
}

// renewDue reports whether the lease of as needs renewing at now: not past its task's
// deadline plus grace (such a lease is left to expire), and renewed too long ago: less
// than half the TTL left, or less than three heartbeats (so a late beat or two still
// renews it in time). Heartbeats and vouched silences share it.
func (s *Server) renewDue(as *assignment, now time.Time) bool {
	if !as.deadline.IsZero() && now.After(as.deadline.Add(s.cfg.TimeoutGrace)) {
		return false
	}
	return as.renewedUntil.Sub(now) <= max(s.cfg.LeaseTTL/2, 3*s.cfg.HeartbeatInterval)
}

// vouchedRenewal is a vouched agent's leases due for renewal (sweepLoop renews them
// after releasing the registry's lock).
type vouchedRenewal struct {
	a    *agent
	refs []store.LeaseRef
}

// dueLeases returns the leases a holds that need renewing at now (renewDue), as a
// heartbeat would renew them. Caller holds s.agents.mu.
func (s *Server) dueLeases(a *agent, now time.Time) []store.LeaseRef {
	var refs []store.LeaseRef
	for id, as := range a.running {
		if as.leaseID == 0 || !s.renewDue(as, now) {
			continue
		}
		if strings.HasPrefix(id, transientPrefix) || strings.HasPrefix(id, preemptPrefix) {
			continue // in memory only, or a preempted task's lease already ended
		}
		refs = append(refs, store.LeaseRef{TaskID: id, LeaseID: as.leaseID})
	}
	return refs
}

// unackedDue returns the leases of assignments a's current session was sent but that
// a has neither acknowledged nor listed as running (listed), due for renewal at now
// (renewDue), for its heartbeat to renew with the listed ones. In a guest starved of
// CPU the agent's heartbeat can go out before it has read an Assign queued behind it:
// renewing only the listed tasks let such a lease lapse 10 s after it was granted,
// although the agent was alive and the Assign on its way (the vouched renewals of a
// silent agent, dueLeases, renew them too). The session's stream is ordered and
// reliable: an Assign it carries reaches the agent or the session ends (and its
// assignments are requeued then). Caller holds s.agents.mu.
func (s *Server) unackedDue(a *agent, listed func(taskID string) bool, now time.Time) []store.LeaseRef {
	var refs []store.LeaseRef
	for id, as := range a.running {
		if as.acked || as.leaseID == 0 || as.sess == nil || as.sess != a.sess || listed(id) || !s.renewDue(as, now) {
			continue
		}
		if strings.HasPrefix(id, transientPrefix) || strings.HasPrefix(id, preemptPrefix) {
			continue
		}
		refs = append(refs, store.LeaseRef{TaskID: id, LeaseID: as.leaseID})
	}
	return refs
}

// renewLeases renews refs, leases held by a, in the store until now + LeaseTTL and
// records it on a's assignments.
func (s *Server) renewLeases(ctx context.Context, a *agent, refs []store.LeaseRef, now time.Time) {
	if len(refs) == 0 {
		return
	}
	expires := now.Add(s.cfg.LeaseTTL)
	if _, err := s.st.Renew(ctx, a.id, refs, expires); err != nil {
		if ctx.Err() == nil {
			s.log.Error("renewing leases", "agent", a.id, "err", err)
		}
		return
	}
	s.agents.mu.Lock()
	for _, r := range refs {
		if as := a.running[r.TaskID]; as != nil && as.leaseID == r.LeaseID {
			as.renewedUntil = expires
		}
	}
	s.agents.mu.Unlock()
}

// listedIn reports whether running lists task id.
func listedIn(running []*agentv1.RunningTask, id string) bool {
	for _, r := range running {
		if r.GetTaskId() == id {
			return true
		}
	}
	return false
}
