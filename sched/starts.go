package sched

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// startDelay is how long the server waits, after an agent acknowledges a batch task,
// before it writes the task's start (leased → running) to the store. A task whose
// result comes first is written once, started and finished together (Report carries
// the start's time), instead of twice: for short tasks that is one store write in four.
// Online tasks' starts are written at once (their start is what their SLA measures).
const startDelay = 100 * time.Millisecond

// startWriters bounds the start writes in flight at once.
const startWriters = 64

// pendingStart is a start acknowledged by an agent and not yet written.
type pendingStart struct {
	a       *agent
	taskID  string
	leaseID uint64
	at      time.Time // when the agent's ack came
}

// startQueue holds the pending starts in the order their acks came.
type startQueue struct {
	mu sync.Mutex
	q  []pendingStart
}

func (q *startQueue) add(p pendingStart) {
	q.mu.Lock()
	q.q = append(q.q, p)
	q.mu.Unlock()
}

// due removes and returns the starts acknowledged at or before t.
func (q *startQueue) due(t time.Time) []pendingStart {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(q.q) && !q.q[n].at.After(t) {
		n++
	}
	out := q.q[:n:n]
	q.q = append([]pendingStart(nil), q.q[n:]...)
	return out
}

// deferStart records that a acknowledged as (a batch task a holds) at now; the start
// is written by startLoop unless the task's report comes first. It reports false for
// an online task, whose start the caller writes at once. Caller holds s.agents.mu.
func (s *Server) deferStart(a *agent, as *assignment, now time.Time) bool {
	if as.class == store.Online {
		return false
	}
	if !as.startedAt.IsZero() {
		return true // a repeated ack: its start is pending already
	}
	as.startedAt = now
	s.starts.add(pendingStart{a: a, taskID: as.taskID, leaseID: as.leaseID, at: now})
	return true
}

// pendingStartOf is when agentID acknowledged taskID under leaseID if that start is
// not yet written (zero otherwise), and whether this server holds that assignment: a
// report carries a pending start into the task's final write.
func (s *Server) pendingStartOf(agentID, taskID string, leaseID uint64) (time.Time, bool) {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	if a := s.agents.byID[agentID]; a != nil {
		if as := a.running[taskID]; as != nil && as.leaseID == leaseID {
			return as.startedAt, true
		}
	}
	return time.Time{}, false
}

// reportedStart is the start a report's final write records, if any: the pending start
// of an assignment this server holds; or, for a task whose start is not in the store
// and whose assignment this server does not know (acknowledged on another replica, or
// before a restart, and not yet written), its end less the attempt's wall time as the
// agent measured it, no earlier than the lease.
func (s *Server) reportedStart(agentID string, t store.Task, now time.Time, wall time.Duration) time.Time {
	at, held := s.pendingStartOf(agentID, t.ID, t.LeaseID)
	if held || !t.StartedAt.IsZero() || t.LeasedAt.IsZero() {
		return at
	}
	if at = now.Add(-wall); at.Before(t.LeasedAt) {
		at = t.LeasedAt
	}
	return at
}

// startLoop writes the starts acknowledged more than startDelay ago whose tasks are
// still running, and the rest when ctx ends.
func (s *Server) startLoop(ctx context.Context) {
	t := time.NewTicker(startDelay / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.writeStarts(context.WithoutCancel(ctx), time.Now())
			return
		case now := <-t.C:
			s.writeStarts(ctx, now.Add(-startDelay))
		}
	}
}

// writeStarts writes the pending starts acknowledged at or before t whose assignments
// are still held, concurrently (the store commits them together).
func (s *Server) writeStarts(ctx context.Context, t time.Time) {
	due := s.starts.due(t)
	if len(due) == 0 {
		return
	}
	todo := due[:0]
	s.agents.mu.Lock()
	for _, p := range due {
		if as := p.a.running[p.taskID]; as != nil && as.leaseID == p.leaseID && !as.startedAt.IsZero() {
			as.startedAt = time.Time{}
			todo = append(todo, p)
		}
	}
	s.agents.mu.Unlock()
	sem := make(chan struct{}, startWriters)
	var wg sync.WaitGroup
	for _, p := range todo {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.writeStart(ctx, p.taskID, p.leaseID, p.at, time.Now())
		}()
	}
	wg.Wait()
}

// writeStart records, at now, that taskID started under leaseID at at: it applies only
// while the task is still leased under that lease.
func (s *Server) writeStart(ctx context.Context, taskID string, leaseID uint64, at, now time.Time) {
	u, err := store.Transition(store.Task{ID: taskID, State: store.Leased, LeaseID: leaseID}, store.EvStart, store.Change{Now: now})
	if err != nil { // cannot happen: a leased task may start
		s.log.Error("recording a start", "task", taskID, "err", err)
		return
	}
	u.StartedAt = at
	nt, err := s.st.Update(ctx, u)
	if err != nil && !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
		s.log.Error("recording a start", "task", taskID, "err", err)
	}
	if err == nil {
		s.observeStart(nt, at) // online SLA (preempt.go)
	}
}
