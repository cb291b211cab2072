package sched

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Several server replicas on one shared store (store.Shared: PostgreSQL).
//
// Every replica serves clients, agents and hosts, and dispatches from the one queue
// to the agents connected to it; the store decides every race (leases with SKIP
// LOCKED, compare-and-swap updates fenced by lease id). What a replica keeps in memory
// is about its own sessions; what other replicas change reaches it so:
//   - tasks queued elsewhere: the store's wake-ups (LISTEN/NOTIFY) wake the
//     dispatcher for their type; the dispatcher's 200ms full read is the fallback;
//   - a cancel requested elsewhere for a task of a local agent: the store's wake-up
//     (CancelChannel), and syncLoop's read of the live tasks every SyncInterval;
//   - a lease of a local agent that another replica ended (expired it; or the agent
//     reported through another replica): syncLoop sees the lease gone from the store
//     twice in a row, frees the agent's slot here and tells the agent to drop it;
//   - a client's Wait on a task another replica finishes: Wait re-reads the task
//     every SyncInterval;
//   - an agent that moves here from a replica that died: its Register lists the tasks
//     it still runs (their leases are kept, checked against the store); the tasks the
//     store says are leased to it and that it does not list are requeued at once
//     (unlistedElsewhere), as after a dropped session on one server.
//
// Idempotency keys and the hosts' backlog counts live in the store already. The
// start-up grace (no lease expires during the first LeaseTTL of a server) stays per
// replica: a replica joining a running cluster merely waits one TTL before it expires
// leases too, while the others keep doing so.

// replicaRE is what a replica id may look like (Config.ReplicaID).
var replicaRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// newReplicaID returns the host name (cut to fit replicaRE) and 6 random hex digits.
func newReplicaID() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, h)
	h = strings.Trim(h, "-_")
	if len(h) > 48 {
		h = h[:48]
	}
	if h == "" {
		h = "server"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return h + "-" + hex.EncodeToString(b[:])
}

// ReplicaID returns this server's replica id (Config.ReplicaID, or the one made at New).
func (s *Server) ReplicaID() string { return s.cfg.ReplicaID }

// wakeupLoop turns the shared store's wake-ups into dispatcher wake-ups and cancels
// forwarded to local agents, until ctx is done. It returns at once over a store that
// is not shared, or sends no wake-ups.
func (s *Server) wakeupLoop(ctx context.Context) {
	sh, ok := s.st.(store.Shared)
	if !ok {
		return
	}
	ch := sh.Wakeups(ctx)
	if ch == nil {
		s.log.Warn("the shared store sends no wake-ups: other replicas' tasks are dispatched here within the 200ms poll, their cancels within the sync interval", "sync_interval", s.cfg.SyncInterval)
		return
	}
	for w := range ch {
		switch {
		case w.Missed:
			s.wakeAll()
			s.syncOnce(ctx, time.Now())
		case w.Cancel != "":
			s.forwardCancel(w.Cancel)
		case w.Type != "":
			s.wakeType(w.Type)
		}
	}
}

// forwardCancel sends a client cancel of task id to the local agent that holds a
// lease of it, unless it was sent already.
func (s *Server) forwardCancel(id string) {
	type cancel struct {
		sess    *session
		leaseID uint64
	}
	var cs []cancel
	s.agents.mu.Lock()
	for _, a := range s.agents.byID {
		if as := a.running[id]; as != nil && as.leaseID != 0 && !as.cancelSent && a.sess != nil {
			as.cancelSent = true
			cs = append(cs, cancel{a.sess, as.leaseID})
		}
	}
	s.agents.mu.Unlock()
	for _, c := range cs {
		c.sess.send(cancelMsg(id, c.leaseID, agentv1.CancelKind_CANCEL_KIND_CLIENT, "cancelled by client"))
	}
}

// cancelOnAgent sends a client cancel of lease leaseID of task id to agentID when its
// session is on this server, and records it as sent.
func (s *Server) cancelOnAgent(agentID, id string, leaseID uint64, msg string) {
	s.agents.mu.Lock()
	var sess *session
	if a := s.agents.byID[agentID]; a != nil {
		sess = a.sess
		if as := a.running[id]; as != nil && as.leaseID == leaseID {
			as.cancelSent = true
		}
	}
	s.agents.mu.Unlock()
	if sess != nil {
		sess.send(cancelMsg(id, leaseID, agentv1.CancelKind_CANCEL_KIND_CLIENT, msg))
	}
}

// syncLoop runs syncOnce every SyncInterval until ctx is done, over a shared store.
func (s *Server) syncLoop(ctx context.Context) {
	if s.shared {
		everyTick(ctx, s.cfg.SyncInterval, func() { s.syncOnce(ctx, time.Now()) })
	}
}

// localLease is a lease the server holds for one of its agents.
type localLease struct {
	a  *agent
	as *assignment
}

// syncOnce compares the leases of the local agents with the store's live tasks:
// cancels requested on another replica are forwarded to the agents; a lease no longer
// in the store (ended by another replica) on two reads SyncInterval apart frees its
// slot here, and the agent is told to drop the task. (One read is not enough: a report
// being recorded here ends the lease in the store just before it frees the slot.)
func (s *Server) syncOnce(ctx context.Context, now time.Time) {
	s.agents.mu.Lock()
	var mine []localLease
	for _, a := range s.agents.byID {
		for _, as := range a.running {
			if as.leaseID != 0 {
				mine = append(mine, localLease{a, as})
			}
		}
	}
	s.agents.mu.Unlock()
	if len(mine) == 0 {
		return
	}
	live, err := s.st.Live(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("reading the live tasks to sync with the other replicas", "err", err)
		}
		return
	}
	byID := make(map[string]*store.Task, len(live))
	for i := range live {
		byID[live[i].ID] = &live[i]
	}
	type msg struct {
		sess *session
		m    *agentv1.ServerMessage
	}
	var msgs []msg
	ended := 0
	s.agents.mu.Lock()
	for _, l := range mine {
		a, as := l.a, l.as
		if a.running[as.taskID] != as {
			continue // ended meanwhile
		}
		if t := byID[as.taskID]; t != nil && t.LeaseID == as.leaseID && t.AgentID == a.id {
			as.staleSince = time.Time{}
			if t.CancelRequested && !as.cancelSent && a.sess != nil {
				as.cancelSent = true
				msgs = append(msgs, msg{a.sess, cancelMsg(t.ID, t.LeaseID, agentv1.CancelKind_CANCEL_KIND_CLIENT, "cancelled by client")})
			}
			continue
		}
		if as.staleSince.IsZero() {
			as.staleSince = now
			continue
		}
		if now.Sub(as.staleSince) < s.cfg.SyncInterval {
			continue
		}
		if a.release(as.taskID, as.leaseID) {
			s.guestTaskEvent(a, as.taskID, as.leaseID, hostv1.TaskEvent_KIND_FINISHED, nil)
		}
		ended++
		if a.sess != nil {
			msgs = append(msgs, msg{a.sess, cancelMsg(as.taskID, as.leaseID, agentv1.CancelKind_CANCEL_KIND_SUPERSEDED, "the lease ended on another server replica")})
		}
	}
	s.agents.mu.Unlock()
	for _, m := range msgs {
		m.sess.send(m.m)
	}
	if ended > 0 {
		s.log.Info("leases ended by other replicas released", "n", ended)
		s.wakeAll()
	}
}

// unlistedElsewhere returns, over a shared store, the tasks the store says are leased
// to a that its new session se does not list as running and that this server did not
// lease on se: leases granted on another replica (which may have died) whose Assign
// never reached the agent. requeueUnlisted ends them at once.
func (s *Server) unlistedElsewhere(ctx context.Context, a *agent, se *session, listed map[string]bool) []string {
	if !s.shared {
		return nil
	}
	live, err := s.st.Live(ctx)
	if err != nil {
		s.log.Error("reading the live tasks of a reconnected agent", "agent", a.id, "err", err)
		return nil
	}
	var ids []string
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	for i := range live {
		t := &live[i]
		if t.AgentID != a.id || listed[t.ID] {
			continue
		}
		if as := a.running[t.ID]; as != nil {
			continue // requeueUnlisted's own (or leased on se)
		}
		ids = append(ids, t.ID)
	}
	return ids
}

// waitPoll returns a channel that ticks every SyncInterval over a shared store (a
// task may finish on another replica, which does not wake this one's waiters), or nil.
func (s *Server) waitPoll() (<-chan time.Time, func()) {
	if !s.shared {
		return nil, func() {}
	}
	t := time.NewTicker(s.cfg.SyncInterval)
	return t.C, t.Stop
}
