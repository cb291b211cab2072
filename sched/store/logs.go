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
