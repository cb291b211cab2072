package runner_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/plugins/internal/plugintest"
	"github.com/paddockvm/paddock/plugins/runner"
)

var bins map[string]plugintest.Binary

func TestMain(m *testing.M) {
	if os.Getenv(agentHelperEnv) != "" {
		os.Exit(agentHelper())
	}
	if mode := os.Getenv(fakeHandlerEnv); mode != "" {
		os.Exit(fakeHandler(mode))
	}
	dir, err := os.MkdirTemp("", "paddock-runner-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins, err = plugintest.Build(dir, "testhandler", "testfiles")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func spec(name string) runner.HandlerSpec {
	b := bins[name]
	return runner.HandlerSpec{Name: name, Path: b.Path, SHA256: b.SHA256}
}

func newRunner(t testing.TB, mod func(*runner.Config)) *runner.Runner {
	t.Helper()
	cfg := runner.Config{
		Handlers:       []runner.HandlerSpec{spec("testhandler")},
		KillGrace:      500 * time.Millisecond,
		RestartBackoff: 50 * time.Millisecond,
		Logger:         testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := runner.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("runner.New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func pid(t *testing.T, r *runner.Runner) int {
	t.Helper()
	st := r.Status()
	if len(st) != 1 {
		t.Fatalf("Status: %d handlers, want 1", len(st))
	}
	return st[0].PID
}

// waitNewPID waits until the handler is up with a pid other than old.
func waitNewPID(t *testing.T, r *runner.Runner, old int) runner.HandlerStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		st := r.Status()[0]
		if st.Up && st.PID != old && st.PID != 0 {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("handler not restarted within 20s (old pid %d): %+v", old, r.Status())
	return runner.HandlerStatus{}
}

func TestTypesAndEcho(t *testing.T) {
	r := newRunner(t, nil)
	types := r.Types()
	var names []string
	for _, tt := range types {
		names = append(names, tt.Name)
		if tt.Version != "1.0.0" || tt.Concurrency != 4 || tt.Handler != "testhandler" {
			t.Errorf("type %+v: want version 1.0.0, concurrency 4, handler testhandler", tt)
		}
	}
	if got, want := strings.Join(names, ","), "test.big,test.crash,test.echo,test.fail,test.flaky,test.hang,test.log,test.logwait,test.panic,test.sleep"; got != want {
		t.Fatalf("Types = %s, want %s", got, want)
	}
	res := r.Execute(context.Background(), runner.Task{ID: "t1", Type: "test.echo", Payload: []byte("hello")})
	if !res.OK() || string(res.Output) != "hello" {
		t.Fatalf("echo: %+v", res)
	}
	if res.Usage.Wall <= 0 || res.Usage.HandlerWall <= 0 || res.Usage.Wall < res.Usage.HandlerWall {
		t.Errorf("usage %+v: want Wall >= HandlerWall > 0", res.Usage)
	}
}

func TestConcurrentCallsShareOneProcess(t *testing.T) {
	r := newRunner(t, nil)
	p0 := pid(t, r)
	const n = 16
	var wg sync.WaitGroup
	results := make([]runner.Result, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.Execute(context.Background(), runner.Task{ID: fmt.Sprint(i), Type: "test.sleep", Payload: []byte("1s")})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, res := range results {
		if !res.OK() {
			t.Errorf("call %d: %+v", i, res)
		}
	}
	// 16 one-second sleeps in one process: they overlapped unless this took ~16s.
	if elapsed > 8*time.Second {
		t.Errorf("16 concurrent 1s calls took %v: the calls did not run concurrently", elapsed)
	}
	if p := pid(t, r); p != p0 || r.Status()[0].Restarts != 0 {
		t.Errorf("pid %d -> %d, restarts %d: want one process", p0, p, r.Status()[0].Restarts)
	}
}

func TestFailureRetryability(t *testing.T) {
	r := newRunner(t, nil)
	for _, tc := range []struct {
		name, payload string
		retryable     bool
	}{
		{"retryable", "retryable", true},
		{"fatal", "fatal", false},
		{"bad payload is fatal", "maybe", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := r.Execute(context.Background(), runner.Task{Type: "test.fail", Payload: []byte(tc.payload)})
			if res.OK() || res.Reason != runner.ReasonHandlerError || res.Retryable != tc.retryable {
				t.Fatalf("got %+v, want a handler_error with Retryable=%v", res, tc.retryable)
			}
		})
	}
}

// TestAttemptReachesHandler: test.flaky fails while the attempt number is within its
// payload and succeeds after, so the attempt number crosses the plugin boundary.
func TestAttemptReachesHandler(t *testing.T) {
	r := newRunner(t, nil)
	for attempt, wantOK := range map[int]bool{1: false, 2: false, 3: true} {
		res := r.Execute(context.Background(), runner.Task{Type: "test.flaky", Payload: []byte("2"), Attempt: attempt})
		if res.OK() != wantOK || (!wantOK && !res.Retryable) {
			t.Errorf("attempt %d: %+v, want ok=%v (a failure retryable)", attempt, res, wantOK)
		}
		if wantOK && string(res.Output) != "attempt 3 succeeded (failed attempts before it: 2)" {
			t.Errorf("attempt %d output %q", attempt, res.Output)
		}
	}
}

func TestCrashFailsInFlightCallsAndRestarts(t *testing.T) {
	r := newRunner(t, nil)
	p0 := pid(t, r)
	// A slow call in flight on the same process when it crashes.
	slow := make(chan runner.Result, 1)
	go func() {
		slow <- r.Execute(context.Background(), runner.Task{ID: "slow", Type: "test.sleep", Payload: []byte("30s")})
	}()
	time.Sleep(200 * time.Millisecond)
	res := r.Execute(context.Background(), runner.Task{ID: "crash", Type: "test.crash"})
	if res.OK() || res.Reason != runner.ReasonCrashed || !res.Retryable || !strings.Contains(res.Error, "handler crashed") {
		t.Fatalf("crash call: %+v, want a retryable handler_crashed", res)
	}
	if s := <-slow; s.Reason != runner.ReasonCrashed || !s.Retryable {
		t.Fatalf("call in flight during the crash: %+v, want a retryable handler_crashed", s)
	}
	// The next call succeeds, on a new process.
	res = r.Execute(context.Background(), runner.Task{ID: "after", Type: "test.echo", Payload: []byte("again")})
	if !res.OK() || string(res.Output) != "again" {
		t.Fatalf("call after the crash: %+v", res)
	}
	st := r.Status()[0]
	if st.PID == p0 || st.Restarts != 1 || !strings.Contains(st.LastExit, "exit status 3") {
		t.Fatalf("status after crash %+v: want a new pid (old %d), 1 restart, last exit 'exit status 3'", st, p0)
	}
}

func TestHangIsKilledAfterGrace(t *testing.T) {
	const grace = 700 * time.Millisecond
	r := newRunner(t, func(c *runner.Config) { c.KillGrace = grace })
	p0 := pid(t, r)
	deadline := time.Now().Add(300 * time.Millisecond)
	res := r.Execute(context.Background(), runner.Task{ID: "hang", Type: "test.hang", Deadline: deadline})
	if res.Reason != runner.ReasonTimeout || !res.Retryable {
		t.Fatalf("hang call: %+v, want a retryable timeout", res)
	}
	if time.Now().Before(deadline) {
		t.Fatalf("hang call returned before its deadline")
	}
	// Still the same process right after the deadline: the grace runs.
	if st := r.Status()[0]; st.PID != p0 {
		t.Fatalf("handler replaced before the grace period ended: %+v", st)
	}
	st := waitNewPID(t, r, p0)
	killedAt := time.Now()
	if killedAt.Before(deadline.Add(grace)) {
		t.Fatalf("handler replaced at %v, before deadline+grace", killedAt.Sub(deadline))
	}
	if !strings.Contains(st.LastExit, "killed") || !strings.Contains(st.LastExit, "still running") {
		t.Fatalf("LastExit %q: want it to say the handler was killed for a call still running", st.LastExit)
	}
	if res := r.Execute(context.Background(), runner.Task{Type: "test.echo", Payload: []byte("ok")}); !res.OK() {
		t.Fatalf("call after the kill: %+v", res)
	}
}

func TestCooperativeCancelDoesNotKill(t *testing.T) {
	r := newRunner(t, func(c *runner.Config) { c.KillGrace = 300 * time.Millisecond })
	p0 := pid(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res := r.Execute(ctx, runner.Task{Type: "test.sleep", Payload: []byte("1m")})
	if res.Reason != runner.ReasonTimeout {
		t.Fatalf("got %+v, want timeout", res)
	}
	time.Sleep(time.Second) // past the grace
	if st := r.Status()[0]; st.PID != p0 || st.Restarts != 0 {
		t.Fatalf("a handler that honoured cancellation was replaced: %+v", st)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); ccancel() }()
	if res := r.Execute(cctx, runner.Task{Type: "test.sleep", Payload: []byte("1m")}); res.Reason != runner.ReasonCancelled || !res.Retryable {
		t.Fatalf("got %+v, want a retryable cancelled", res)
	}
}

func TestOutputLimit(t *testing.T) {
	r := newRunner(t, func(c *runner.Config) { c.MaxOutputBytes = 4096 })
	if res := r.Execute(context.Background(), runner.Task{Type: "test.big", Payload: []byte("4096")}); !res.OK() || len(res.Output) != 4096 {
		t.Fatalf("output at the limit: %v %d bytes", res.Error, len(res.Output))
	}
	res := r.Execute(context.Background(), runner.Task{Type: "test.big", Payload: []byte("4097")})
	if res.Reason != runner.ReasonOutputTooLarge || res.Retryable || !strings.Contains(res.Error, "MaxOutputBytes") || !strings.Contains(res.Error, "4097") {
		t.Fatalf("output over the limit: %+v", res)
	}
}

func TestPanicIsFatalAndProcessSurvives(t *testing.T) {
	r := newRunner(t, nil)
	p0 := pid(t, r)
	res := r.Execute(context.Background(), runner.Task{Type: "test.panic"})
	if res.Reason != runner.ReasonPanic || res.Retryable || !strings.Contains(res.Error, "as asked") {
		t.Fatalf("got %+v", res)
	}
	if pid(t, r) != p0 {
		t.Fatal("a recovered panic restarted the handler")
	}
}

func TestUnknownType(t *testing.T) {
	r := newRunner(t, nil)
	res := r.Execute(context.Background(), runner.Task{Type: "nope"})
	if res.Reason != runner.ReasonUnknownType || res.Retryable || !strings.Contains(res.Error, `"nope"`) {
		t.Fatalf("got %+v", res)
	}
}

func TestTamperedBinaryIsRefused(t *testing.T) {
	b, err := os.ReadFile(bins["testhandler"].Path)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/tampered"
	if err := os.WriteFile(path, append(b, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = runner.New(context.Background(), runner.Config{
		Handlers: []runner.HandlerSpec{{Name: "evil", Path: path, SHA256: bins["testhandler"].SHA256}},
		Logger:   testLogger(t),
	})
	if !errors.Is(err, runner.ErrChecksum) || !strings.Contains(err.Error(), `"evil"`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("New with a tampered binary: %v; want ErrChecksum naming handler \"evil\" and its path", err)
	}
}

func TestTamperedBinaryIsRefusedOnRestart(t *testing.T) {
	b, err := os.ReadFile(bins["testhandler"].Path)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/th"
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	r := newRunner(t, func(c *runner.Config) {
		c.Handlers = []runner.HandlerSpec{{Name: "th", Path: path, SHA256: bins["testhandler"].SHA256}}
	})
	// Replace the binary (a running executable cannot be written in place).
	if err := os.WriteFile(path+".new", append(b, 1), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if res := r.Execute(context.Background(), runner.Task{Type: "test.crash"}); res.Reason != runner.ReasonCrashed {
		t.Fatalf("crash: %+v", res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res := r.Execute(ctx, runner.Task{Type: "test.echo"})
	if res.OK() || res.Reason != runner.ReasonTimeout {
		t.Fatalf("call while the only binary is tampered: %+v, want a timeout waiting for the restart", res)
	}
	if st := r.Status()[0]; st.Up {
		t.Fatalf("tampered handler was restarted: %+v", st)
	}
}

func TestConfigValidate(t *testing.T) {
	good := runner.HandlerSpec{Name: "a", Path: "/bin/a", SHA256: strings.Repeat("ab", 32)}
	for _, tc := range []struct {
		name    string
		cfg     runner.Config
		wantErr string
	}{
		{"ok", runner.Config{Handlers: []runner.HandlerSpec{good}}, ""},
		{"no handlers", runner.Config{}, "Handlers is empty"},
		{"no name", runner.Config{Handlers: []runner.HandlerSpec{{Path: "/x", SHA256: good.SHA256}}}, "Name is empty"},
		{"relative path", runner.Config{Handlers: []runner.HandlerSpec{{Name: "a", Path: "x", SHA256: good.SHA256}}}, "not absolute"},
		{"bad sha", runner.Config{Handlers: []runner.HandlerSpec{{Name: "a", Path: "/x", SHA256: "abc"}}}, "SHA256"},
		{"dup", runner.Config{Handlers: []runner.HandlerSpec{good, good}}, "used twice"},
		{"dup type", runner.Config{Handlers: []runner.HandlerSpec{{Name: "a", Path: "/x", SHA256: good.SHA256, Types: []runner.TaskType{{Name: "t"}, {Name: "t"}}}}}, "repeated name"},
		{"neg limit", runner.Config{Handlers: []runner.HandlerSpec{good}, MaxOutputBytes: -1}, "MaxOutputBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}
