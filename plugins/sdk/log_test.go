package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// TestLoggerFormat: Logger's lines are what go-plugin's client parses (its log_entry.go):
// "@timestamp" in hclog's format (a slog RFC 3339 timestamp made go-plugin drop the
// record's level to DEBUG), "@level" in hclog's names; a record logged with Handle's
// ctx or through Request.Logger carries its task.
func TestLoggerFormat(t *testing.T) {
	var buf bytes.Buffer
	old := logOutput
	logOutput = &buf
	defer func() { logOutput = old }()

	ctx := withTask(context.Background(), "task-1", 2)
	Logger().InfoContext(ctx, "hello", "k", "v")
	Request{TaskID: "task-2", Attempt: 1}.Logger().Warn("careful")
	Logger().Debug("no task")
	logCallEnd("call-9", "task-1")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4:\n%s", len(lines), buf.String())
	}
	want := []map[string]any{
		{"@level": "info", "@message": "hello", "k": "v", LogKeyTask: "task-1", LogKeyAttempt: 2.0},
		{"@level": "warn", "@message": "careful", LogKeyTask: "task-2", LogKeyAttempt: 1.0},
		{"@level": "debug", "@message": "no task"},
		{"@level": "info", LogKeyCallEnd: "call-9", LogKeyTask: "task-1"},
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
		ts, _ := m["@timestamp"].(string)
		if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts); err != nil {
			t.Errorf("line %d: @timestamp %q does not parse as go-plugin parses it: %v", i, ts, err)
		}
		for k, v := range want[i] {
			if m[k] != v {
				t.Errorf("line %d: %s = %v, want %v (%s)", i, k, m[k], v, l)
			}
		}
		if _, ok := m[LogKeyTask]; ok != (want[i][LogKeyTask] != nil) {
			t.Errorf("line %d: task key present %v, want %v", i, ok, !ok)
		}
	}
}

// TestLogEnd: a call that logged ends with the end-of-call line and says so
// (log_end), after its records; a call that logged nothing writes none, so the
// agent does not wait for one.
func TestLogEnd(t *testing.T) {
	var buf bytes.Buffer
	old := logOutput
	logOutput = &buf
	defer func() { logOutput = old }()

	quiet := handle(t, context.Background(), func(context.Context, Request) (Response, error) {
		return Response{Output: []byte("x")}, nil
	}, &handlerpb.HandleRequest{CallId: "c1", TaskId: "t1"})
	if quiet.GetLogEnd() || buf.Len() != 0 {
		t.Errorf("a call that logged nothing: log_end %v, wrote %q", quiet.GetLogEnd(), buf.String())
	}
	loud := handle(t, context.Background(), func(ctx context.Context, r Request) (Response, error) {
		r.Logger().Info("one")
		return Response{}, nil
	}, &handlerpb.HandleRequest{CallId: "c2", TaskId: "t2"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !loud.GetLogEnd() || len(lines) != 2 || !strings.Contains(lines[1], `"`+LogKeyCallEnd+`":"c2"`) {
		t.Errorf("a call that logged: log_end %v, lines:\n%s", loud.GetLogEnd(), buf.String())
	}
}
