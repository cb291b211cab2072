package rowcodec

import (
	"encoding/json"
	"fmt"

	"github.com/paddockvm/paddock/sched/store"
)

// EncAttemptLog checks l (its attempt must be 1 or more: else an error wrapping
// store.ErrInvalid) and encodes its lines for task taskID's row.
func EncAttemptLog(taskID string, l store.AttemptLog) (string, error) {
	if l.Attempt < 1 {
		return "", fmt.Errorf("storing the log of task %s: attempt %d: %w (want 1 or more)", taskID, l.Attempt, store.ErrInvalid)
	}
	return EncLogLines(l.Lines)
}

// EncLogLines encodes an attempt's log lines as JSON.
func EncLogLines(lines []store.LogLine) (string, error) {
	if lines == nil {
		lines = []store.LogLine{}
	}
	b, err := json.Marshal(lines)
	if err != nil {
		return "", fmt.Errorf("encoding log lines: %w", err)
	}
	return string(b), nil
}

// DecLogLines is the inverse of EncLogLines.
func DecLogLines(s string) ([]store.LogLine, error) {
	var lines []store.LogLine
	if err := json.Unmarshal([]byte(s), &lines); err != nil {
		return nil, fmt.Errorf("decoding log lines: %w", err)
	}
	return lines, nil
}
