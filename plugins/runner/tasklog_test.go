package runner_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/paddockvm/paddock/plugins/runner"
)

// logLines renders a TaskLog as "level text" lines.
func logLines(l runner.TaskLog) []string {
	var out []string
	for _, ln := range l.Lines {
		out = append(out, ln.Level+" "+ln.Text)
	}
	return out
}

// TestHandlerLogsReachTask runs test.log in the real handler process: each way a
// handler logs (a logger made before Serve, one made during the call, the request's
// logger, a plain slog JSON logger, a raw line on stdout) reaches the task's log with
// its own level. Before the fix, sdk.Logger() made after Serve wrote to a stderr
// go-plugin forwards and the runner discarded, and one made before Serve wrote
// timestamps go-plugin could not parse, so its records arrived as DEBUG.
func TestHandlerLogsReachTask(t *testing.T) {
	r := newRunner(t, nil)
	res := r.Execute(context.Background(), runner.Task{ID: "t1", Type: "test.log", Payload: []byte("alpha"), Attempt: 1})
	if !res.OK() {
		t.Fatalf("test.log: %+v", res)
	}
	got := logLines(res.Logs)
	for _, want := range []string{
		"info early logger with ctx tag=alpha",
		"warn late logger with ctx tag=alpha",
		"debug request logger tag=alpha",
		"info early logger without ctx tag=alpha",
		"error plain slog logger tag=alpha",
	} {
		if !contains(got, want) {
			t.Errorf("task log lacks %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, l := range got {
		if strings.Contains(l, "paddock_") || strings.Contains(l, "call ended") {
			t.Errorf("task log shows the SDK's bookkeeping: %q", l)
		}
	}
	if res.Logs.DroppedLines != 0 {
		t.Errorf("dropped %d lines of a short log", res.Logs.DroppedLines)
	}
}

// TestRawStdoutReachesTask: a line printed on stdout after Serve travels over
// go-plugin's stdio stream, which has no order with the answer, so it may come a
// moment after its call has ended: at least one of five calls must have its line.
func TestRawStdoutReachesTask(t *testing.T) {
	r := newRunner(t, nil)
	var seen bool
	for i := range 5 {
		tag := fmt.Sprint("raw", i)
		res := r.Execute(context.Background(), runner.Task{ID: tag, Type: "test.log", Payload: []byte(tag)})
		for _, l := range logLines(res.Logs) {
			if strings.HasPrefix(l, "stdout raw stdout ") {
				seen = true
			}
		}
	}
	if !seen {
		t.Errorf("no raw stdout line reached any of 5 calls")
	}
}

// TestConcurrentTaskLogsStayApart: calls in flight at once in one process each get
// only the lines logged with their own task (through ctx or the request's logger).
func TestConcurrentTaskLogsStayApart(t *testing.T) {
	r := newRunner(t, nil)
	const n = 8
	var wg sync.WaitGroup
	results := make([]runner.Result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.Execute(context.Background(), runner.Task{ID: fmt.Sprint("c", i), Type: "test.log", Payload: []byte(fmt.Sprint("tag", i))})
		}()
	}
	wg.Wait()
	for i, res := range results {
		got := logLines(res.Logs)
		for _, want := range []string{fmt.Sprintf("info early logger with ctx tag=tag%d", i), fmt.Sprintf("debug request logger tag=tag%d", i)} {
			if !contains(got, want) {
				t.Errorf("call %d lacks %q; got:\n%s", i, want, strings.Join(got, "\n"))
			}
		}
		for _, l := range got {
			if strings.Contains(l, "tag=tag") && !strings.HasSuffix(l, fmt.Sprintf("tag=tag%d", i)) {
				t.Errorf("call %d got another task's line %q", i, l)
			}
		}
	}
}

// TestTaskLogIsBounded: past MaxTaskLogBytes the oldest lines are dropped and counted.
func TestTaskLogIsBounded(t *testing.T) {
	r := newRunner(t, func(c *runner.Config) { c.MaxTaskLogBytes = 200 })
	res := r.Execute(context.Background(), runner.Task{ID: "b", Type: "test.log", Payload: []byte("bounded")})
	if !res.OK() {
		t.Fatalf("test.log: %+v", res)
	}
	if res.Logs.DroppedLines == 0 || res.Logs.DroppedBytes == 0 {
		t.Errorf("a 200-byte bound kept %d lines and dropped none", len(res.Logs.Lines))
	}
	got := logLines(res.Logs)
	if len(got) == 0 || contains(got, "info early logger with ctx tag=bounded") {
		t.Errorf("want the newest lines only; got:\n%s", strings.Join(got, "\n"))
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// TestOnLogTakesLines: with Task.OnLog set, the handler's lines go to it as they
// arrive (the same lines Result.Logs would hold) and Result.Logs stays empty, so the
// agent's report does not carry them twice; after Execute returns OnLog is not called.
func TestOnLogTakesLines(t *testing.T) {
	r := newRunner(t, nil)
	var mu sync.Mutex
	var got []string
	returned := false
	res := r.Execute(context.Background(), runner.Task{ID: "live", Type: "test.log", Payload: []byte("beta"), Attempt: 1,
		OnLog: func(l runner.LogLine) {
			mu.Lock()
			defer mu.Unlock()
			if returned {
				t.Errorf("OnLog called after Execute returned: %+v", l)
			}
			got = append(got, l.Level+" "+l.Text)
		}})
	mu.Lock()
	returned = true
	lines := append([]string(nil), got...)
	mu.Unlock()
	if !res.OK() {
		t.Fatalf("test.log: %+v", res)
	}
	if len(res.Logs.Lines) != 0 || res.Logs.DroppedLines != 0 {
		t.Errorf("Result.Logs = %+v; want empty with OnLog set", res.Logs)
	}
	for _, want := range []string{"info early logger with ctx tag=beta", "warn late logger with ctx tag=beta", "error plain slog logger tag=beta"} {
		if !contains(lines, want) {
			t.Errorf("OnLog got no %q; got:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}
