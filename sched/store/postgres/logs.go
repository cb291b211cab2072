package postgres

import (
	"context"
	"fmt"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/internal/rowcodec"
)

// PutLog implements store.LogStore.
func (s *Store) PutLog(ctx context.Context, taskID string, l store.AttemptLog) error {
	lines, err := rowcodec.EncAttemptLog(taskID, l)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO task_logs (task_id, attempt, dropped_lines, dropped_bytes, lines)
 SELECT id, $2::integer, $3::bigint, $4::bigint, $5::text FROM tasks WHERE id = $1
 ON CONFLICT (task_id, attempt) DO UPDATE SET dropped_lines = excluded.dropped_lines, dropped_bytes = excluded.dropped_bytes, lines = excluded.lines`,
		taskID, l.Attempt, l.DroppedLines, l.DroppedBytes, lines)
	if err != nil {
		return fmt.Errorf("storing the log of task %s attempt %d: %w", taskID, l.Attempt, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("storing the log of task %s: %w", taskID, store.ErrNotFound)
	}
	return nil
}

// Logs implements store.LogStore.
func (s *Store) Logs(ctx context.Context, taskID string, attempt int) ([]store.AttemptLog, error) {
	rows, err := s.pool.Query(ctx, `SELECT attempt, dropped_lines, dropped_bytes, lines FROM task_logs
 WHERE task_id = $1 AND ($2::integer = 0 OR attempt = $2::integer) ORDER BY attempt`, taskID, attempt)
	if err != nil {
		return nil, fmt.Errorf("reading the logs of task %s: %w", taskID, err)
	}
	defer rows.Close()
	var out []store.AttemptLog
	for rows.Next() {
		var l store.AttemptLog
		var n int32
		var lines string
		if err := rows.Scan(&n, &l.DroppedLines, &l.DroppedBytes, &lines); err != nil {
			return nil, fmt.Errorf("reading the logs of task %s: %w", taskID, err)
		}
		l.Attempt = int(n)
		if l.Lines, err = rowcodec.DecLogLines(lines); err != nil {
			return nil, fmt.Errorf("reading the log of task %s attempt %d: %w", taskID, l.Attempt, err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the logs of task %s: %w", taskID, err)
	}
	return out, nil
}
