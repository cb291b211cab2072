package sqlite

import (
	"context"
	"database/sql"
	"errors"
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
	return s.write(ctx, func(tx *wtx) error {
		var one int
		err := tx.queryRow(`SELECT 1 FROM tasks WHERE id = ?`, taskID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storing the log of task %s: %w", taskID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("storing the log of task %s: %w", taskID, err)
		}
		_, err = tx.exec(`INSERT INTO task_logs (task_id, attempt, dropped_lines, dropped_bytes, lines) VALUES (?, ?, ?, ?, ?)
 ON CONFLICT (task_id, attempt) DO UPDATE SET dropped_lines = excluded.dropped_lines, dropped_bytes = excluded.dropped_bytes, lines = excluded.lines`,
			taskID, l.Attempt, l.DroppedLines, l.DroppedBytes, lines)
		if err != nil {
			return fmt.Errorf("storing the log of task %s attempt %d: %w", taskID, l.Attempt, err)
		}
		return nil
	})
}

// Logs implements store.LogStore.
func (s *Store) Logs(ctx context.Context, taskID string, attempt int) ([]store.AttemptLog, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT attempt, dropped_lines, dropped_bytes, lines FROM task_logs
 WHERE task_id = ? AND (? = 0 OR attempt = ?) ORDER BY attempt`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, taskID, attempt, attempt)
	if err != nil {
		return nil, fmt.Errorf("reading the logs of task %s: %w", taskID, err)
	}
	defer rows.Close()
	var out []store.AttemptLog
	for rows.Next() {
		var l store.AttemptLog
		var lines string
		if err := rows.Scan(&l.Attempt, &l.DroppedLines, &l.DroppedBytes, &lines); err != nil {
			return nil, fmt.Errorf("reading the logs of task %s: %w", taskID, err)
		}
		if l.Lines, err = rowcodec.DecLogLines(lines); err != nil {
			return nil, fmt.Errorf("reading the log of task %s attempt %d: %w", taskID, l.Attempt, err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// AppendLog implements store.LogStore.
func (s *Store) AppendLog(ctx context.Context, taskID string, l store.AttemptLog) error {
	if l.Attempt < 1 {
		return fmt.Errorf("appending to the log of task %s: attempt %d: %w (want 1 or more)", taskID, l.Attempt, store.ErrInvalid)
	}
	return s.write(ctx, func(tx *wtx) error {
		var one int
		err := tx.queryRow(`SELECT 1 FROM tasks WHERE id = ?`, taskID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("appending to the log of task %s: %w", taskID, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("appending to the log of task %s: %w", taskID, err)
		}
		old := store.AttemptLog{Attempt: l.Attempt}
		var lines string
		err = tx.queryRow(`SELECT dropped_lines, dropped_bytes, lines FROM task_logs WHERE task_id = ? AND attempt = ?`, taskID, l.Attempt).
			Scan(&old.DroppedLines, &old.DroppedBytes, &lines)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("appending to the log of task %s attempt %d: %w", taskID, l.Attempt, err)
		default:
			if old.Lines, err = rowcodec.DecLogLines(lines); err != nil {
				return fmt.Errorf("appending to the log of task %s attempt %d: %w", taskID, l.Attempt, err)
			}
		}
		nl := old.Appended(l, store.MaxAttemptLogBytes)
		enc, err := rowcodec.EncLogLines(nl.Lines)
		if err != nil {
			return err
		}
		_, err = tx.exec(`INSERT INTO task_logs (task_id, attempt, dropped_lines, dropped_bytes, lines) VALUES (?, ?, ?, ?, ?)
 ON CONFLICT (task_id, attempt) DO UPDATE SET dropped_lines = excluded.dropped_lines, dropped_bytes = excluded.dropped_bytes, lines = excluded.lines`,
			taskID, l.Attempt, nl.DroppedLines, nl.DroppedBytes, enc)
		if err != nil {
			return fmt.Errorf("appending to the log of task %s attempt %d: %w", taskID, l.Attempt, err)
		}
		return nil
	})
}
