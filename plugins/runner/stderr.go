package runner

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"time"
)

// level is the level of a line a handler logged on its stderr (hclog's names).
type level int8

const (
	levelNone level = iota // no level found: the line is passed on as debug
	levelTrace
	levelDebug
	levelInfo
	levelWarn
	levelError
)

func (l level) String() string {
	switch l {
	case levelTrace:
		return "trace"
	case levelDebug:
		return "debug"
	case levelInfo:
		return "info"
	case levelWarn:
		return "warn"
	case levelError:
		return "error"
	default:
		return "none"
	}
}

func (l level) slog() slog.Level {
	switch l {
	case levelTrace:
		return slog.LevelDebug - 4
	case levelWarn:
		return slog.LevelWarn
	case levelError:
		return slog.LevelError
	case levelInfo:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

func levelFromString(s string) level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace":
		return levelTrace
	case "debug":
		return levelDebug
	case "info":
		return levelInfo
	case "warn", "warning":
		return levelWarn
	case "error":
		return levelError
	default:
		return levelNone
	}
}

// hclogTimeFormat is the timestamp format of hclog's JSON lines (the SDK's logger).
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// stderrParser reads the lines one handler process writes to its stderr (before
// and after Serve: the SDK's hclog JSON logger, and the Go runtime's panics), as
// go-plugin's client does: a JSON line with a level keeps its level, message and
// attributes (hclog's "@level"/"@message"/"@timestamp" or slog's
// "level"/"msg"/"time"); another line takes its level from a "[WARN]"-style
// prefix, and from "panic: " or "fatal error: " on, every line is an error.
type stderrParser struct {
	inPanic bool
}

// parse returns a line's level, message and attributes (key, value pairs; a
// "timestamp" value is a time.Time).
func (p *stderrParser) parse(line string) (level, string, []any) {
	if strings.HasPrefix(line, "{") {
		if lv, msg, args, ok := parseJSONLine(line); ok {
			return lv, msg, args
		}
	}
	for _, pre := range []struct {
		prefix string
		lv     level
	}{{"[TRACE]", levelTrace}, {"[DEBUG]", levelDebug}, {"[INFO]", levelInfo}, {"[WARN]", levelWarn}, {"[ERROR]", levelError}} {
		if strings.HasPrefix(line, pre.prefix) {
			return pre.lv, line, nil
		}
	}
	if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
		p.inPanic = true
	}
	if p.inPanic {
		return levelError, line, nil
	}
	return levelDebug, line, nil
}

// parseJSONLine parses a JSON log line; ok is false when it is not JSON or has
// no level.
func parseJSONLine(line string) (lv level, msg string, args []any, ok bool) {
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(line))
	d.UseNumber()
	if d.Decode(&m) != nil {
		return levelNone, "", nil, false
	}
	for _, k := range []string{"@level", "level"} {
		if s, isStr := m[k].(string); isStr {
			lv = levelFromString(s)
			delete(m, k)
			break
		}
	}
	if lv == levelNone {
		return levelNone, "", nil, false
	}
	for _, k := range []string{"@message", "msg", "message"} {
		if s, isStr := m[k].(string); isStr {
			msg = s
			delete(m, k)
			break
		}
	}
	for _, k := range []string{"@timestamp", "time"} {
		if s, isStr := m[k].(string); isStr {
			if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
				args = append(args, "timestamp", ts)
			}
			delete(m, k)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	return lv, msg, args, true
}

// stderrLogger returns the function that handles one process's stderr lines: a
// line goes to the call it belongs to (logTap.record), or else to the agent's
// log, attributed to the handler (plugin_log).
func (h *handler) stderrLogger() func(string) {
	p := &stderrParser{}
	return func(line string) {
		lv, msg, args := p.parse(line)
		if h.tap.record(lv, msg, args) {
			return
		}
		sl := lv.slog()
		ctx := context.Background()
		if !h.log.Enabled(ctx, sl) {
			return
		}
		all := make([]any, 0, len(args)+2)
		all = append(all, "plugin_log", h.tap.plugin)
		for i := 0; i+1 < len(args); i += 2 {
			if ts, isTime := args[i+1].(time.Time); isTime {
				all = append(all, args[i], ts.Format(hclogTimeFormat))
				continue
			}
			all = append(all, args[i], args[i+1])
		}
		h.log.Log(ctx, sl, msg, all...)
	}
}
