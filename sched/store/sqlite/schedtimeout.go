package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// ScheduleExpired implements store.Store.
func (s *Store) ScheduleExpired(ctx context.Context, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryLimit(ctx, `SELECT `+listCols+` FROM tasks WHERE schedule_deadline > 0 AND state = 'queued' AND schedule_deadline <= ? AND attempt = 0
 ORDER BY schedule_deadline LIMIT ?`, limit, ms(now))
	if err != nil {
		return nil, fmt.Errorf("finding tasks past their schedule-to-start timeout: %w", err)
	}
	return ts, nil
}
