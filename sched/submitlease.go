package sched

import (
	"context"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Leasing at submit. A task submitted one at a time onto an idle cluster used to take
// two store commits before its Assign left: the submit's (Create), then, once the
// dispatcher woke and read the queue, the lease's. When a connected agent has a free
// slot for the task and nothing of its type waits in the queue, the submit books that
// slot and stores the task already leased to that agent in its own commit
// (store.CreateLease); the Assign is sent as soon as that commit returns, beside the
// answer to the client. Nothing is given up: the client is answered only once the task
// (and its lease) is durable; the lease is an ordinary one (fencing token, secret,
// expiry, attempt), so an agent lost before it acks loses it to lease expiry as any.
//
// The dispatcher's order is kept: the fast path is taken only while the type is not
// hinted ready (no task of it known queued, stored or transient), so a submitted task
// never overtakes one waiting for a slot; tasks that need the dispatcher's judgement
// go to it (input blobs: placement near them; upstreams, not_before; tenants with
// weights or limits: fair sharing). A task whose retry backoff has just run out is
// found by the dispatcher's next periodic read, and one submitted meanwhile may start
// before it, as a task of higher priority would.

// submitSlot is the slot a submit booked for its task.
type submitSlot struct {
	a     *agent
	grant store.Grant
}

// bookAtSubmit books a free slot for t, about to be created, if it may be leased at
// submit (see above), and returns it (nil: t goes to the queue).
func (s *Server) bookAtSubmit(t *store.Task, now time.Time) *submitSlot {
	if len(s.cfg.Tenants) > 0 || len(t.InputBlobs) > 0 || len(t.Upstreams) > 0 || !t.NotBefore.IsZero() {
		return nil
	}
	if _, hinted := s.readyHint(t.Type); hinted || s.trans.queued() {
		return nil
	}
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	a := s.pick(t)
	if a == nil || a.sess == nil {
		return nil
	}
	a.book(t.ID, t.Type, t.Class, t.Tenant)
	return &submitSlot{a: a, grant: store.Grant{TaskID: t.ID, AgentID: a.id, ExpiresAt: now.Add(s.cfg.LeaseTTL), Secret: newSecret()}}
}

// unbook frees a slot booked at submit whose task was not leased.
func (s *Server) unbook(b *submitSlot) {
	s.agents.mu.Lock()
	b.a.unbook(b.grant.TaskID)
	s.agents.mu.Unlock()
}

// createTask stores t (Submit): leased in the slot booked for it when there is one
// (CreateLease, its Assign sent once that is committed), else queued (Create).
func (s *Server) createTask(ctx context.Context, t store.Task) (store.Task, bool, error) {
	now := t.CreatedAt
	b := s.bookAtSubmit(&t, now)
	if b == nil {
		return s.st.Create(ctx, t)
	}
	stored, created, err := s.st.CreateLease(ctx, t, now, b.grant)
	if err != nil || !created || stored.State != store.Leased {
		s.unbook(b)
		return stored, created, err
	}
	s.agents.mu.Lock()
	var msg *agentv1.ServerMessage
	se := b.a.sess
	if as := b.a.running[stored.ID]; as != nil && se != nil {
		msg = &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: s.assignFor(b.a, as, &stored, now)}}
	}
	s.agents.mu.Unlock()
	if msg != nil {
		se.send(msg) // a session ended meanwhile: the lease expires as any unsent one
	}
	s.metrics.dispatchLatency.WithLabelValues(s.metrics.types.label(stored.Type)).Observe(time.Since(now).Seconds())
	s.queue.leased(stored.Type, 0)
	return stored, created, nil
}
