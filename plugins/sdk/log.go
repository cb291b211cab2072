package sdk

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/paddockvm/paddock/plugins/internal/contract"
)

// Keys the SDK adds to a log record so the agent can file it under its task. The
// agent strips them from the line it keeps.
const (
	// LogKeyTask carries the task id of the call that logged the record.
	LogKeyTask = contract.LogKeyTask
	// LogKeyAttempt carries the attempt number of that call.
	LogKeyAttempt = contract.LogKeyAttempt
	// LogKeyCallEnd marks the SDK's last line of a call (its value is the call id):
	// every line the handler logged during the call came before it, so the agent
	// knows it has them all. The agent never shows this line.
	LogKeyCallEnd = contract.LogKeyCallEnd
)

// hclogTimeFormat is the timestamp format go-plugin parses in a plugin's JSON log
// lines; a line whose "@timestamp" has any other format is not parsed at all and
// reaches the agent as an unleveled DEBUG line.
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// logOutput is the process's stderr as it was when the program started, before
// Serve: the pipe go-plugin's client reads log lines from. Serve points os.Stderr
// at another pipe whose bytes travel as raw stdio, so loggers must not follow
// os.Stderr.
var logOutput io.Writer = os.Stderr

// Logger returns a logger for handler code. Its records go to the agent with their
// level, whether the logger was made before or after Serve. Log with the Handle
// call's ctx (logger.InfoContext(ctx, ...)) or use Request.Logger, and the record
// is also kept with the task's logs (`paddock task logs ID`); a record without its
// task is kept with the task only when no other task runs in the handler then.
func Logger() *slog.Logger {
	return slog.New(taskLogHandler{newJSONHandler(logOutput)})
}

// Logger returns Logger() with the request's task attached to every record, so
// each record is kept with this task's logs however many tasks run at once.
func (r Request) Logger() *slog.Logger {
	return Logger().With(LogKeyTask, r.TaskID, LogKeyAttempt, r.Attempt)
}

// newJSONHandler writes records as the JSON lines go-plugin parses: "@timestamp"
// (in hclog's format), "@level", "@message", then the attributes.
func newJSONHandler(w io.Writer) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				a.Key = "@timestamp"
				if t, ok := a.Value.Any().(time.Time); ok {
					a.Value = slog.StringValue(t.Format(hclogTimeFormat))
				}
			case slog.MessageKey:
				a.Key = "@message"
			case slog.LevelKey:
				a.Key = "@level"
				a.Value = slog.StringValue(hclogLevel(a.Value.Any()))
			}
			return a
		},
	})
}

// hclogLevel names a slog level as hclog does (trace, debug, info, warn, error).
func hclogLevel(v any) string {
	l, ok := v.(slog.Level)
	if !ok {
		return strings.ToLower(slog.AnyValue(v).String())
	}
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	default:
		return "error"
	}
}

// taskKey is the context key of the call's task (a taskRef).
type taskKey struct{}

type taskRef struct {
	id      string
	attempt int
}

// withTask returns ctx carrying the call's task for Logger's records.
func withTask(ctx context.Context, id string, attempt int) context.Context {
	return context.WithValue(ctx, taskKey{}, taskRef{id, attempt})
}

// taskLogHandler adds the task of the call whose ctx a record was logged with.
type taskLogHandler struct{ slog.Handler }

func (h taskLogHandler) Handle(ctx context.Context, r slog.Record) error {
	logRecords.Add(1)
	if t, ok := ctx.Value(taskKey{}).(taskRef); ok {
		r.AddAttrs(slog.String(LogKeyTask, t.id), slog.Int(LogKeyAttempt, t.attempt))
	}
	return h.Handler.Handle(ctx, r)
}

func (h taskLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return taskLogHandler{h.Handler.WithAttrs(as)}
}

func (h taskLogHandler) WithGroup(name string) slog.Handler {
	return taskLogHandler{h.Handler.WithGroup(name)}
}

// logRecords counts the records Logger's loggers wrote, so a call knows whether
// anything was logged while it ran.
var logRecords atomic.Uint64

// logCallEnd writes the line that tells the agent the call's log lines are all out,
// and reports whether it did (not without a call id).
func logCallEnd(callID, taskID string) bool {
	if callID == "" {
		return false
	}
	line, _ := json.Marshal(map[string]string{
		"@timestamp": time.Now().Format(hclogTimeFormat), "@level": "info",
		"@message": "call ended", LogKeyCallEnd: callID, LogKeyTask: taskID,
	})
	_, err := logOutput.Write(append(line, '\n'))
	return err == nil
}
