package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paddockvm/paddock/plugins/internal/contract"
)

// LogLine is one line a handler logged during a task.
type LogLine struct {
	Time  time.Time
	Level string // "debug", "info", "warn", "error"; "stdout"/"stderr" for raw output
	// Text is the message followed by the record's attributes as key=value.
	Text string
}

// TaskLog is what a handler logged during one call: the newest lines within
// Config.MaxTaskLogBytes, and how many older ones were dropped to stay within it.
type TaskLog struct {
	Lines        []LogLine
	DroppedLines int
	DroppedBytes int64
}

// maxLogLine bounds one line's text; a longer one is cut and marked.
const maxLogLine = 8 << 10

// callEndWait bounds how long Execute waits, after a handler answered, for the
// line that says the call's log lines are all out (SDK version 2 and later).
const callEndWait = 2 * time.Second

// logTap files the lines one handler's processes log under the calls running in it.
// A line that names its task (sdk.LogKeyTask) goes to that task's call; a line that
// does not goes to the one call in flight, or to none when several are.
type logTap struct {
	plugin   string // the handler binary's base name (plugin_log in the agent's log)
	maxBytes int

	// mu guards calls.
	mu    sync.Mutex
	calls map[string]*callLog // by task id
}

// callLog collects the lines of one call.
type callLog struct {
	callID string
	ended  chan struct{} // closed when the SDK's end-of-call line arrived
	once   sync.Once
	live   func(LogLine) // Task.OnLog: takes the lines instead of lines below; nil: none

	// mu guards the fields below.
	mu      sync.Mutex
	over    bool // end returned: live is not called any more
	lines   []LogLine
	bytes   int
	dropped int
	dropB   int64
	max     int
}

func newLogTap(plugin string, maxBytes int) *logTap {
	return &logTap{plugin: plugin, maxBytes: maxBytes, calls: map[string]*callLog{}}
}

// begin starts collecting the lines of a call of task taskID.
// live, when not nil, takes each line instead of the call's log (Task.OnLog).
func (t *logTap) begin(taskID, callID string, live func(LogLine)) *callLog {
	c := &callLog{callID: callID, ended: make(chan struct{}), max: t.maxBytes, live: live}
	t.mu.Lock()
	t.calls[taskID] = c
	t.mu.Unlock()
	return c
}

// end stops collecting the call's lines and returns them.
func (t *logTap) end(taskID string, c *callLog) TaskLog {
	t.mu.Lock()
	if t.calls[taskID] == c {
		delete(t.calls, taskID)
	}
	t.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.over = true
	return TaskLog{Lines: c.lines, DroppedLines: c.dropped, DroppedBytes: c.dropB}
}

// waitEnd waits up to callEndWait for the call's end-of-call line.
func (c *callLog) waitEnd() {
	t := time.NewTimer(callEndWait)
	defer t.Stop()
	select {
	case <-c.ended:
	case <-t.C:
	}
}

func (c *callLog) add(l LogLine) {
	if len(l.Text) > maxLogLine {
		l.Text = l.Text[:maxLogLine] + fmt.Sprintf("… [line cut: %d bytes]", len(l.Text))
	}
	n := len(l.Text) + 32
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live != nil {
		if !c.over {
			c.live(l)
		}
		return
	}
	c.lines = append(c.lines, l)
	c.bytes += n
	for c.bytes > c.max && len(c.lines) > 1 {
		d := len(c.lines[0].Text) + 32
		c.lines[0] = LogLine{}
		c.lines = c.lines[1:]
		c.bytes -= d
		c.dropped++
		c.dropB += int64(d - 32)
	}
}

// target returns the call a line belongs to: the named task's, else the only call.
func (t *logTap) target(taskID string) *callLog {
	t.mu.Lock()
	defer t.mu.Unlock()
	if taskID != "" {
		return t.calls[taskID]
	}
	if len(t.calls) == 1 {
		for _, c := range t.calls {
			return c
		}
	}
	return nil
}

// record files one parsed log record of the handler. It reports whether the
// record was the SDK's end-of-call line, which nobody else should see.
func (t *logTap) record(lv level, msg string, args []any) (callEnd bool) {
	var taskID, endID string
	when := time.Time{}
	var kv []string
	for i := 0; i+1 < len(args); i += 2 {
		k := fmt.Sprint(args[i])
		v := args[i+1]
		switch k {
		case contract.LogKeyTask:
			taskID = fmt.Sprint(v)
		case contract.LogKeyCallEnd:
			endID = fmt.Sprint(v)
		case contract.LogKeyAttempt:
		case "timestamp":
			if ts, ok := v.(time.Time); ok {
				when = ts
			}
		default:
			kv = append(kv, k+"="+logValue(v))
		}
	}
	c := t.target(taskID)
	if endID != "" {
		if c != nil && c.callID == endID {
			c.once.Do(func() { close(c.ended) })
		}
		return true
	}
	if c == nil {
		return false
	}
	if when.IsZero() {
		when = time.Now()
	}
	sort.Strings(kv)
	text := msg
	if len(kv) > 0 {
		text += " " + strings.Join(kv, " ")
	}
	c.add(LogLine{Time: when, Level: lv.String(), Text: text})
	return false
}

// raw files one line the handler wrote to its stdout or stderr after Serve (not
// through a logger): only when one call is in flight, since it names no task.
func (t *logTap) raw(stream, line string) {
	if c := t.target(""); c != nil {
		c.add(LogLine{Time: time.Now(), Level: stream, Text: line})
	}
}

func logValue(v any) string {
	s := fmt.Sprint(v)
	if m, ok := v.(map[string]any); ok {
		b, _ := json.Marshal(m)
		s = string(b)
	}
	if s == "" || strings.ContainsAny(s, " \t\"=") {
		return strconv.Quote(s)
	}
	return s
}

// lineWriter turns the handler's raw stdout or stderr (forwarded by go-plugin after
// Serve) into lines: each goes to the agent's log and to the call in flight.
type lineWriter struct {
	stream string
	tap    *logTap
	log    *slog.Logger

	// mu guards buf.
	mu  sync.Mutex
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 && len(w.buf) < maxLogLine {
			break
		}
		if i < 0 {
			i = len(w.buf)
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[min(i+1, len(w.buf)):]
		w.log.Info("handler output", "stream", w.stream, "line", line)
		w.tap.raw(w.stream, line)
	}
	return len(p), nil
}
