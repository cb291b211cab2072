package session

import (
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/plugins/runner"
)

// taskLog turns the runner's log of a call into the report's (nil when empty).
// The runner has bounded it already (runner.Config.MaxTaskLogBytes).
func taskLog(l runner.TaskLog) *agentv1.TaskLog {
	if len(l.Lines) == 0 && l.DroppedLines == 0 {
		return nil
	}
	out := &agentv1.TaskLog{DroppedLines: uint64(l.DroppedLines), DroppedBytes: uint64(l.DroppedBytes),
		Lines: make([]*agentv1.LogLine, len(l.Lines))}
	for i, ln := range l.Lines {
		out.Lines[i] = &agentv1.LogLine{UnixNanos: ln.Time.UnixNano(), Level: ln.Level, Text: ln.Text}
	}
	return out
}
