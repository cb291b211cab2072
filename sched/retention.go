package sched

import (
	"context"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// DefaultTaskRetention is how long finished tasks are kept, by final state, when
// Config.TaskRetention does not say (as River's job cleaner: completed and cancelled
// jobs a day, discarded ones a week).
var DefaultTaskRetention = map[store.State]time.Duration{
	store.Succeeded: 24 * time.Hour,
	store.Cancelled: 24 * time.Hour,
	store.Failed:    7 * 24 * time.Hour,
	store.Dead:      7 * 24 * time.Hour,
}

// retentionBatch is how many tasks one DeleteFinished call removes: small enough that
// the SQLite writer is not held long, large enough to keep up with any submit rate.
const retentionBatch = 1000

// taskRetention returns the retention of finished tasks in state st (0: kept forever).
func (c Config) taskRetention(st store.State) time.Duration {
	if d, ok := c.TaskRetention[st]; ok {
		return d
	}
	return DefaultTaskRetention[st]
}

// validateRetention checks Config.TaskRetention.
func (c Config) validateRetention() error {
	for st, d := range c.TaskRetention {
		if !st.Terminal() {
			return fmt.Errorf("server config: task retention for state %q (server.task_retention.%s): only finished states are deleted: succeeded, failed, cancelled or dead", st, st)
		}
		if d < 0 {
			return fmt.Errorf("server config: task retention for %s tasks (server.task_retention.%s) %v is negative: give a duration such as 24h, or 0 to keep them forever", st, st, d)
		}
	}
	return nil
}

// retentionLoop deletes finished tasks past their retention (DeleteExpiredTasks) every
// min(shortest retention/10, 10 min), at least every second. Any number of replicas may
// run it at once: a deletion is idempotent.
func (s *Server) retentionLoop(ctx context.Context) {
	every := 10 * time.Minute
	for _, st := range store.States {
		if d := s.cfg.taskRetention(st); st.Terminal() && d > 0 {
			every = min(every, d/10)
		}
	}
	every = max(every, time.Second)
	everyTick(ctx, every, func() {
		if _, err := s.DeleteExpiredTasks(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Error("deleting finished tasks past their retention", "err", err)
		}
	})
}

// everyTick calls fn every period until ctx is done.
func everyTick(ctx context.Context, every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// DeleteExpiredTasks deletes every finished task whose state's retention has passed
// since it finished (with its attempts), in batches, and returns how many it deleted.
func (s *Server) DeleteExpiredTasks(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for _, st := range store.States {
		d := s.cfg.taskRetention(st)
		if !st.Terminal() || d <= 0 {
			continue
		}
		for {
			n, err := s.st.DeleteFinished(ctx, st, now.Add(-d), retentionBatch)
			total += n
			s.metrics.tasksDeleted.WithLabelValues(string(st)).Add(float64(n))
			if err != nil {
				return total, err
			}
			if n < retentionBatch {
				break
			}
		}
	}
	if total > 0 {
		s.log.Info("deleted finished tasks past their retention", "tasks", total)
	}
	return total, nil
}
