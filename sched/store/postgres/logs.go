package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

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

// AppendLog implements store.LogStore. The attempt's row is created empty if need be
// and locked (FOR UPDATE) while the lines are merged, so appends never lose lines.
func (s *Store) AppendLog(ctx context.Context, taskID string, l store.AttemptLog) error {
	if l.Attempt < 1 {
		return fmt.Errorf("appending to the log of task %s: attempt %d: %w (want 1 or more)", taskID, l.Attempt, store.ErrInvalid)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO task_logs (task_id, attempt, dropped_lines, dropped_bytes, lines)
 SELECT id, $2::integer, 0, 0, '[]' FROM tasks WHERE id = $1 ON CONFLICT (task_id, attempt) DO NOTHING`, taskID, l.Attempt); err != nil {
			return err
		}
		old := store.AttemptLog{Attempt: l.Attempt}
		var lines string
		err := tx.QueryRow(ctx, `SELECT dropped_lines, dropped_bytes, lines FROM task_logs WHERE task_id = $1 AND attempt = $2::integer FOR UPDATE`,
			taskID, l.Attempt).Scan(&old.DroppedLines, &old.DroppedBytes, &lines)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if old.Lines, err = rowcodec.DecLogLines(lines); err != nil {
			return err
		}
		nl := old.Appended(l, store.MaxAttemptLogBytes)
		enc, err := rowcodec.EncLogLines(nl.Lines)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE task_logs SET dropped_lines = $3, dropped_bytes = $4, lines = $5 WHERE task_id = $1 AND attempt = $2::integer`,
			taskID, l.Attempt, nl.DroppedLines, nl.DroppedBytes, enc)
		return err
	})
	if err != nil {
		return fmt.Errorf("appending to the log of task %s attempt %d: %w", taskID, l.Attempt, err)
	}
	return nil
}
