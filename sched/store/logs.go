package store

import (
	"context"
	"time"
)

// LogStore keeps what handlers logged, one log per attempt of a task.
type LogStore interface {
	// PutLog stores the log of one attempt of a task, replacing any log stored for that
	// attempt. It returns an error wrapping ErrNotFound when the task does not exist and
	// ErrInvalid when l.Attempt is not 1 or more.
	PutLog(ctx context.Context, taskID string, l AttemptLog) error
	// AppendLog adds l's lines and drop counts to the stored log of attempt l.Attempt
	// (creating it), atomically, keeping the newest lines within MaxAttemptLogBytes
	// (see AttemptLog.Appended). Errors as PutLog's.
	AppendLog(ctx context.Context, taskID string, l AttemptLog) error
	// Logs returns the stored logs of a task's attempts, oldest attempt first; attempt
	// 0 means every attempt, otherwise only that one (none if it has no log).
	Logs(ctx context.Context, taskID string, attempt int) ([]AttemptLog, error)
}

// AttemptLog is what the handler logged during one attempt: the newest lines within
// the agent's bound, and how many older ones the agent dropped.
type AttemptLog struct {
	Attempt      int
	Lines        []LogLine
	DroppedLines int64
	DroppedBytes int64
}

// LogLine is one logged line.
type LogLine struct {
	Time  time.Time `json:"t"`
	Level string    `json:"l"`
	Text  string    `json:"m"`
}

// MaxAttemptLogBytes bounds the stored log of one attempt: AppendLog drops the
// oldest lines beyond it (and counts them), as the agent does.
const MaxAttemptLogBytes = 1 << 20

// LineCost is what one line counts against MaxAttemptLogBytes: its text plus room
// for its time and level (the agent's runner counts the same way).
func LineCost(l LogLine) int { return len(l.Text) + 32 }

// Appended returns l with more's lines after its own and more's drop counts added,
// then the oldest lines dropped (and counted) until the lines cost at most maxBytes
// (the newest line is always kept). l's Lines are not modified.
func (l AttemptLog) Appended(more AttemptLog, maxBytes int) AttemptLog {
	out := AttemptLog{Attempt: l.Attempt, DroppedLines: l.DroppedLines + more.DroppedLines, DroppedBytes: l.DroppedBytes + more.DroppedBytes}
	lines := make([]LogLine, 0, len(l.Lines)+len(more.Lines))
	lines = append(append(lines, l.Lines...), more.Lines...)
	size := 0
	for _, ln := range lines {
		size += LineCost(ln)
	}
	i := 0
	for size > maxBytes && i < len(lines)-1 {
		size -= LineCost(lines[i])
		out.DroppedLines++
		out.DroppedBytes += int64(len(lines[i].Text))
		i++
	}
	out.Lines = lines[i:]
	return out
}
