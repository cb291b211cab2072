package session

import (
	"context"
	"errors"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// Tasks sent ahead (agentv1.CapQueueAhead): the server may send transient stream items
// beyond this agent's free slots of their type (Assign.may_queue), so that a slot that
// frees starts the next item at once instead of sitting idle for a round trip to the
// server. Such a task takes a ticket of the allocator's queue (alloc.Enqueue: granted
// within the type's limit, in the order asked), is acknowledged at once and waits in
// s.queued until its ticket is granted; a slot released by a run that ends grants the
// next ticket, and startQueued starts what was granted meanwhile, the tasks of one type
// in one ExecuteBatch call. The agent never runs more than its limits for them: a
// queued task holds no slot. A queued task the server cancels, supersedes or that the
// agent's shutdown stops ends without running, reported as a run stopped at once would
// be.

// maxQueued bounds the tasks waiting in s.queued; an Assign with may_queue beyond it is
// refused (the server sends at most a type's slots ahead, far fewer).
const maxQueued = 4096

// queuedRun is a task sent ahead, waiting for its slot.
type queuedRun struct {
	pending
	base    context.Context // the session's context, which bounds a batch of runs
	timeout time.Duration   // its run's timeout from its start (0: none)
}

// granted reports whether p's ticket holds its slot.
func (p *queuedRun) granted() bool {
	select {
	case <-p.r.slot.Ready():
		return true
	default:
		return false
	}
}

// queueLocked holds run r of task t (sent ahead, its ticket not granted yet) until its
// slot frees. Caller holds s.mu.
func (s *Session) queueLocked(ctx, base context.Context, r *run, t Task, timeout time.Duration) {
	r.queued = true
	s.queued = append(s.queued, queuedRun{pending: pending{ctx: ctx, r: r, t: t}, base: base, timeout: timeout})
}

// kickQueuedLocked has startQueued run soon when tasks wait (one at a time: the reports
// of a burst of ends meanwhile are served by one call). Caller holds s.mu.
func (s *Session) kickQueuedLocked() {
	if len(s.queued) == 0 || s.startPending {
		return
	}
	s.startPending = true
	s.spawn(s.startQueued)
}

// kickQueued is kickQueuedLocked for a caller without s.mu.
func (s *Session) kickQueued() {
	s.mu.Lock()
	s.kickQueuedLocked()
	s.mu.Unlock()
}

// startQueued starts the queued tasks whose tickets were granted, in order, and ends
// those stopped while they waited.
func (s *Session) startQueued() {
	s.mu.Lock()
	s.startPending = false
	var ready []pending
	var stopped []queuedRun
	var base context.Context
	q := s.queued[:0]
	now := time.Now()
	for _, p := range s.queued {
		switch {
		case p.ctx.Err() != nil:
			p.r.queued = false
			stopped = append(stopped, p)
		case p.granted():
			p.r.queued = false
			if p.timeout > 0 {
				p.t.Deadline = now.Add(p.timeout)
			}
			ready = append(ready, p.pending)
			base = p.base
		default:
			q = append(q, p)
		}
	}
	clear(s.queued[len(q):])
	s.queued = q
	var last func()
	if len(ready) > 0 {
		last = s.runReady(base, ready, true)
	}
	s.mu.Unlock()
	for _, p := range stopped {
		err := context.Cause(p.ctx)
		if err == nil {
			err = errors.New("stopped")
		}
		s.report(p.ctx, p.r, p.t, Result{Error: "stopped before it started: " + err.Error(), Kind: agentv1.FailureKind_FAILURE_KIND_CANCELLED}, now)
	}
	if last != nil {
		last() // on this goroutine (a task goroutine of spawn's): one hand-off fewer
	}
}
