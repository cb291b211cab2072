package rowcodec

import (
	"encoding/json"
	"fmt"

	"github.com/paddockvm/paddock/sched/store"
)

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
