package sched

import (
	"context"
	"errors"
	"fmt"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Schedule-to-start timeouts: a task that no agent started within its timeout after its
// submission (TaskSpec.schedule_to_start_timeout_ms, else server.schedule_to_start_timeout)
// ends FAILED with kind ScheduleTimeout and Explain's reason why it was still queued.
// Only a task never started (attempt 0) times out this way: once an attempt ran, its
// retries wait as long as they must.

// scheduleTimeout returns sp's schedule-to-start timeout (the server default for 0;
// 0: none), or an error naming the field.
func (s *Server) scheduleTimeout(sp *paddockv1.TaskSpec) (time.Duration, error) {
	switch ms := sp.GetScheduleToStartTimeoutMs(); {
	case ms < 0:
		return 0, invalid("task.schedule_to_start_timeout_ms: %d is negative: give the longest wait for a first start in milliseconds, or 0 for the server default (server.schedule_to_start_timeout)", ms)
	case ms > MaxTimeout.Milliseconds():
		return 0, invalid("task.schedule_to_start_timeout_ms: %d is over the longest timeout, %d (%v)", ms, MaxTimeout.Milliseconds(), MaxTimeout)
	case ms == 0:
		return s.cfg.ScheduleToStartTimeout, nil
	default:
		return time.Duration(ms) * time.Millisecond, nil
	}
}

// scheduleDeadline is the ScheduleDeadline of a task of spec sp (validated) created at
// created; zero for none.
func (s *Server) scheduleDeadline(created time.Time, sp *paddockv1.TaskSpec) time.Time {
	d, err := s.scheduleTimeout(sp)
	if err != nil || d <= 0 {
		return time.Time{}
	}
	return created.Add(d)
}

// scheduleTimeouts fails the tasks whose schedule-to-start timeout passed (the sweep
// loop calls it every tick, after the agents' reconnect grace).
func (s *Server) scheduleTimeouts(ctx context.Context, now time.Time) {
	ts, err := s.st.ScheduleExpired(ctx, now, 1000)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("finding tasks past their schedule-to-start timeout", "err", err)
		}
		return
	}
	for i := range ts {
		s.scheduleTimeout1(ctx, ts[i], now)
	}
}

func (s *Server) scheduleTimeout1(ctx context.Context, t store.Task, now time.Time) {
	msg := fmt.Sprintf("no agent started it within %v: %s", t.ScheduleDeadline.Sub(t.CreatedAt), s.placement(&t).GetMessage())
	u, err := store.Transition(t, store.EvScheduleTimeout, store.Change{Now: now, Error: msg, FailureKind: store.ScheduleTimeout})
	if err != nil {
		s.log.Error("schedule-to-start timeout", "task", t.ID, "err", err)
		return
	}
	nt, err := s.st.Update(ctx, u)
	if errors.Is(err, store.ErrConflict) {
		return // leased (or cancelled) in the meantime
	}
	if err != nil {
		s.log.Error("schedule-to-start timeout", "task", t.ID, "err", err)
		return
	}
	s.log.Warn("task failed: schedule-to-start timeout", "task", t.ID, "type", t.Type, "why", msg)
	s.finished(nt)
}
