package runner_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/plugins/runner"
)

// executeBatch runs calls through r.ExecuteBatch and returns the results by index,
// failing the test when a call gets no result or two.
func executeBatch(t *testing.T, r *runner.Runner, calls []runner.Call) []runner.Result {
	t.Helper()
	var mu sync.Mutex
	got := make([]int, len(calls))
	out := make([]runner.Result, len(calls))
	r.ExecuteBatch(context.Background(), calls, func(i int, res runner.Result) {
		mu.Lock()
		defer mu.Unlock()
		got[i]++
		out[i] = res
	})
	for i, n := range got {
		if n != 1 {
			t.Errorf("call %d (%s): %d results, want exactly 1", i, calls[i].Task.ID, n)
		}
	}
	return out
}

// batchLog is a runner logger whose lines a test reads.
func batchLog(mod func(*runner.Config)) (*syncBuffer, func(*runner.Config)) {
	logs := &syncBuffer{}
	return logs, func(c *runner.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		if mod != nil {
			mod(c)
		}
	}
}

const noBatchLine = "does not implement HandleBatch"

// TestExecuteBatch sends tasks that succeed and fail in each way in one batch to the
// real testhandler: each gets its own result in its own place.
func TestExecuteBatch(t *testing.T) {
	logs, mod := batchLog(nil)
	r := newRunner(t, mod)
	p0 := pid(t, r)
	var calls []runner.Call
	for i := range 50 {
		calls = append(calls, runner.Call{Task: runner.Task{ID: fmt.Sprint("e", i), Type: "test.echo", Payload: []byte(fmt.Sprint("payload ", i))}})
	}
	special := []runner.Task{
		{ID: "retryable", Type: "test.fail", Payload: []byte("retryable")},
		{ID: "fatal", Type: "test.fail", Payload: []byte("fatal")},
		{ID: "panic", Type: "test.panic"},
		{ID: "unknown", Type: "no.such.type"},
		{ID: "flaky", Type: "test.flaky", Payload: []byte("1"), Attempt: 2},
		{ID: "log", Type: "test.log", Payload: []byte("batchtag")},
	}
	for _, tk := range special {
		calls = append(calls, runner.Call{Task: tk})
	}
	res := executeBatch(t, r, calls)
	for i := range 50 {
		if !res[i].OK() || string(res[i].Output) != fmt.Sprint("payload ", i) || res[i].Usage.HandlerWall <= 0 || res[i].Usage.Wall <= 0 {
			t.Errorf("echo %d: %+v, want output %q with usage", i, res[i], fmt.Sprint("payload ", i))
		}
	}
	byID := map[string]runner.Result{}
	for k, tk := range special {
		byID[tk.ID] = res[50+k]
	}
	for _, c := range []struct {
		id        string
		reason    runner.Reason
		retryable bool
		msg       string
	}{
		{"retryable", runner.ReasonHandlerError, true, "a transient failure"},
		{"fatal", runner.ReasonHandlerError, false, "a permanent failure"},
		{"panic", runner.ReasonPanic, false, "panicked"},
		{"unknown", runner.ReasonUnknownType, false, `no handler serves task type "no.such.type"`},
	} {
		got := byID[c.id]
		if got.OK() || got.Reason != c.reason || got.Retryable != c.retryable || !strings.Contains(got.Error, c.msg) {
			t.Errorf("%s: %+v, want reason %s, retryable %v, error containing %q", c.id, got, c.reason, c.retryable, c.msg)
		}
	}
	if f := byID["flaky"]; !f.OK() || !strings.Contains(string(f.Output), "attempt 2 succeeded") {
		t.Errorf("flaky attempt 2: %+v: the attempt number did not reach the handler", f)
	}
	lg := byID["log"]
	if !lg.OK() || !strings.Contains(fmt.Sprint(lg.Logs.Lines), "batchtag") {
		t.Errorf("test.log: %+v: want its own log lines in its result", lg)
	}
	if strings.Contains(logs.String(), noBatchLine) {
		t.Errorf("the runner fell back to one Handle per task with an SDK handler:\n%s", logs.String())
	}
	if p := pid(t, r); p != p0 {
		t.Errorf("pid %d -> %d: the handler restarted", p0, p)
	}
}

// TestExecuteBatchSplits: more tasks than MaxBatch go in several calls, each answered.
func TestExecuteBatchSplits(t *testing.T) {
	r := newRunner(t, nil)
	n := runner.MaxBatch*2 + 3
	calls := make([]runner.Call, n)
	for i := range calls {
		calls[i] = runner.Call{Task: runner.Task{ID: fmt.Sprint(i), Type: "test.echo", Payload: []byte(fmt.Sprint(i))}}
	}
	for i, res := range executeBatch(t, r, calls) {
		if !res.OK() || string(res.Output) != fmt.Sprint(i) {
			t.Fatalf("call %d: %+v", i, res)
		}
	}
}

// TestExecuteBatchCrash: a task that crashes the handler mid-batch gives every task of
// the batch still running a retryable "handler crashed"; the handler restarts and the
// next batch runs.
func TestExecuteBatchCrash(t *testing.T) {
	r := newRunner(t, nil)
	p0 := pid(t, r)
	calls := []runner.Call{
		{Task: runner.Task{ID: "slow1", Type: "test.sleep", Payload: []byte("60s")}},
		{Task: runner.Task{ID: "slow2", Type: "test.sleep", Payload: []byte("60s")}},
		{Task: runner.Task{ID: "crash", Type: "test.crash"}},
	}
	for i, res := range executeBatch(t, r, calls) {
		if res.OK() || res.Reason != runner.ReasonCrashed || !res.Retryable || !strings.Contains(res.Error, "handler crashed") || !strings.Contains(res.Error, calls[i].Task.ID) {
			t.Errorf("%s: %+v, want a retryable handler_crashed naming the task", calls[i].Task.ID, res)
		}
	}
	// Sent while the handler restarts: each task waits for it (within its own deadline).
	res := executeBatch(t, r, []runner.Call{
		{Task: runner.Task{ID: "during1", Type: "test.echo", Payload: []byte("during")}},
		{Task: runner.Task{ID: "during2", Type: "test.echo", Payload: []byte("during")}},
	})
	for _, rs := range res {
		if !rs.OK() || string(rs.Output) != "during" {
			t.Fatalf("sent during the restart: %+v", rs)
		}
	}
	waitNewPID(t, r, p0)
	res = executeBatch(t, r, []runner.Call{
		{Task: runner.Task{ID: "after1", Type: "test.echo", Payload: []byte("again")}},
		{Task: runner.Task{ID: "after2", Type: "test.echo", Payload: []byte("again")}},
	})
	for _, rs := range res {
		if !rs.OK() || string(rs.Output) != "again" {
			t.Fatalf("after the restart: %+v", rs)
		}
	}
}

// TestExecuteBatchDeadlineAndCancel: one task past its deadline and one cancelled get
// their results while the others of the batch still run; a task that ignores its
// deadline (test.hang) gets a timeout and the handler is killed after KillGrace.
func TestExecuteBatchDeadlineAndCancel(t *testing.T) {
	r := newRunner(t, nil)
	p0 := pid(t, r)
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := t.TempDir() + "/release"
	calls := []runner.Call{
		{Task: runner.Task{ID: "late", Type: "test.sleep", Payload: []byte("60s"), Deadline: time.Now().Add(300 * time.Millisecond)}},
		{Task: runner.Task{ID: "cancelled", Type: "test.sleep", Payload: []byte("60s")}, Ctx: cctx},
		{Task: runner.Task{ID: "echo", Type: "test.echo", Payload: []byte("fine")}},
		{Task: runner.Task{ID: "waits", Type: "test.logwait", Payload: []byte(release)}},
	}
	var mu sync.Mutex
	results := map[string]runner.Result{}
	finished := make(chan string, len(calls))
	go func() {
		r.ExecuteBatch(context.Background(), calls, func(i int, res runner.Result) {
			mu.Lock()
			results[calls[i].Task.ID] = res
			mu.Unlock()
			finished <- calls[i].Task.ID
		})
		close(finished)
	}()
	wait := func(ids ...string) {
		t.Helper()
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		for len(want) > 0 {
			select {
			case id, ok := <-finished:
				if !ok {
					t.Fatalf("ExecuteBatch returned while %v had no result", want)
				}
				if !want[id] {
					t.Fatalf("task %s finished before %v", id, want)
				}
				delete(want, id)
			case <-time.After(time.Minute):
				t.Fatalf("no result for %v within a minute", want)
			}
		}
	}
	wait("echo", "late") // "waits" and "cancelled" still run
	cancel()
	wait("cancelled")
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wait("waits")
	mu.Lock()
	defer mu.Unlock()
	if res := results["late"]; res.Reason != runner.ReasonTimeout || !res.Retryable {
		t.Errorf("late: %+v, want a retryable timeout", res)
	}
	if res := results["cancelled"]; res.Reason != runner.ReasonCancelled || !res.Retryable {
		t.Errorf("cancelled: %+v, want a retryable cancelled", res)
	}
	if res := results["echo"]; !res.OK() || string(res.Output) != "fine" {
		t.Errorf("echo: %+v", res)
	}
	if res := results["waits"]; !res.OK() || string(res.Output) != "released" {
		t.Errorf("waits: %+v", res)
	}
	// Both cancelled tasks returned inside the handler: no kill.
	if p := pid(t, r); p != p0 {
		t.Errorf("pid %d -> %d: the handler was restarted although its tasks honoured their cancel", p0, p)
	}

	// A task that ignores its deadline: a timeout at once, and the handler is killed
	// KillGrace later.
	res := executeBatch(t, r, []runner.Call{
		{Task: runner.Task{ID: "hang", Type: "test.hang", Deadline: time.Now().Add(200 * time.Millisecond)}},
		{Task: runner.Task{ID: "echo2", Type: "test.echo", Payload: []byte("x")}},
	})
	if res[0].Reason != runner.ReasonTimeout || !res[1].OK() {
		t.Fatalf("hang: %+v, echo2: %+v: want a timeout and a success", res[0], res[1])
	}
	st := waitNewPID(t, r, p0)
	if !strings.Contains(st.LastExit, "hang") {
		t.Errorf("last exit %q: want the kill naming task hang", st.LastExit)
	}
}

// TestExecuteBatchFallback: a handler without HandleBatch (built with go-plugin
// alone, as an older one built with plugins/sdk) answers Unimplemented; the runner
// runs each task with its own Handle call, and remembers not to try again.
func TestExecuteBatchFallback(t *testing.T) {
	logs, mod := batchLog(func(c *runner.Config) { c.Handlers = []runner.HandlerSpec{fakeSpec(t, "plain")} })
	r := newRunner(t, mod)
	for round := range 2 {
		var calls []runner.Call
		for i := range 5 {
			calls = append(calls, runner.Call{Task: runner.Task{ID: fmt.Sprint(round, i), Type: "plain.upper", Payload: []byte(fmt.Sprint("shout", i))}})
		}
		for i, res := range executeBatch(t, r, calls) {
			if !res.OK() || string(res.Output) != fmt.Sprint("SHOUT", i) {
				t.Errorf("round %d call %d: %+v", round, i, res)
			}
		}
	}
	if n := strings.Count(logs.String(), noBatchLine); n != 1 {
		t.Errorf("%d log lines saying the handler has no HandleBatch, want 1:\n%s", n, logs.String())
	}
	// The handler's stdout comes on its own stream: wait for the first ask, then for
	// the plain Handle calls' lines of both rounds (after the asks), and count.
	deadline := time.Now().Add(time.Minute)
	for strings.Count(logs.String(), "plain handler says hello on stdout") < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("the handler's stdout lines did not reach the log within a minute:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), plainBatchAsked); n != 1 {
		t.Errorf("the handler was asked for HandleBatch %d times, want once (its Unimplemented is remembered):\n%s", n, logs.String())
	}
}

// TestExecuteBatchOutputTooLarge: a task of a batch whose result is over
// Config.MaxOutputBytes fails alone (output_too_large, not retryable).
func TestExecuteBatchOutputTooLarge(t *testing.T) {
	r := newRunner(t, func(c *runner.Config) { c.MaxOutputBytes = 1000 })
	res := executeBatch(t, r, []runner.Call{
		{Task: runner.Task{ID: "big", Type: "test.big", Payload: []byte("5000")}},
		{Task: runner.Task{ID: "small", Type: "test.big", Payload: []byte("10")}},
	})
	if res[0].Reason != runner.ReasonOutputTooLarge || res[0].Retryable || !strings.Contains(res[0].Error, "MaxOutputBytes") {
		t.Errorf("big: %+v, want a fatal output_too_large naming the limit", res[0])
	}
	if !res[1].OK() || len(res[1].Output) != 10 {
		t.Errorf("small: %+v, want 10 bytes", res[1])
	}
}

// TestExecuteBatchSettled: every result is followed by a settled call (the answers of
// one message by one call), a task of an unknown type's too, and none is left
// unsettled when the batch returns.
func TestExecuteBatchSettled(t *testing.T) {
	r := newRunner(t, nil)
	var calls []runner.Call
	for i := range 40 {
		calls = append(calls, runner.Call{Task: runner.Task{ID: fmt.Sprint("s", i), Type: "test.echo", Payload: []byte("x")}})
	}
	calls = append(calls, runner.Call{Task: runner.Task{ID: "unknown", Type: "test.nosuchtype"}})
	var mu sync.Mutex
	results, settles, unsettled := 0, 0, 0
	r.ExecuteBatchSettled(context.Background(), calls, func(i int, res runner.Result) {
		mu.Lock()
		defer mu.Unlock()
		results++
		unsettled++
		if res.OK() != (calls[i].Task.Type == "test.echo") {
			t.Errorf("task %s: %+v", calls[i].Task.ID, res)
		}
	}, func() {
		mu.Lock()
		defer mu.Unlock()
		settles++
		unsettled = 0
	})
	mu.Lock()
	defer mu.Unlock()
	if results != len(calls) || settles == 0 || settles > results || unsettled != 0 {
		t.Errorf("%d results, %d settled calls, %d results unsettled at the end; want %d results, 1 to %d settled calls, none unsettled",
			results, settles, unsettled, len(calls), len(calls))
	}
	t.Logf("%d results in %d settled groups", results, settles)
}
