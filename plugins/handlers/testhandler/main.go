// Command testhandler is a handler for Paddock's test suites, not for users. Its
// task types misbehave on purpose:
//
//	test.echo   output = payload
//	test.sleep  sleeps for the duration in the payload ("250ms"), honouring ctx; payload
//	            "cpu:1s" instead keeps a CPU busy until the process used 1s more CPU time
//	test.fail   fails; payload "retryable" or "fatal" says how
//	test.flaky  fails (retryable) on attempts up to the payload's number, then succeeds:
//	            payload "1" fails the first attempt and succeeds on the first retry
//	test.crash  exits the process (status 3) in the middle of the call
//	test.hang   ignores ctx and never returns
//	test.big    returns an output of as many bytes as the payload's decimal number
//	test.panic  panics (the SDK recovers it as a fatal error)
//	test.log    logs lines tagged with the payload: through a logger made before Serve,
//	            one made during the call, the request's logger, a plain slog JSON logger
//	            made before Serve, and a raw line on stdout; output = payload
//	test.logwait logs "waiting for <payload>", then waits (honouring ctx) until the file
//	            named by the payload exists, logs "released" and returns output "released":
//	            a running task with a log line, for the live log tests
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type testHandler struct{}

// Loggers made before Serve (package variables are set before main runs).
var (
	early     = sdk.Logger()
	plainSlog = slog.New(slog.NewJSONHandler(os.Stderr, nil))
)

var _ sdk.Handler = testHandler{}

func (testHandler) Describe() []sdk.TaskType {
	var out []sdk.TaskType
	for _, n := range []string{"test.echo", "test.sleep", "test.fail", "test.flaky", "test.crash", "test.hang", "test.big", "test.panic", "test.log", "test.logwait"} {
		out = append(out, sdk.TaskType{Name: n, Version: "1.0.0", Concurrency: 4, Description: "test-only: " + n})
	}
	return out
}

func (testHandler) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	switch req.Type {
	case "test.echo":
		return sdk.Response{Output: req.Payload}, nil
	case "test.log":
		tag := string(req.Payload)
		early.InfoContext(ctx, "early logger with ctx", "tag", tag)
		sdk.Logger().WarnContext(ctx, "late logger with ctx", "tag", tag)
		req.Logger().Debug("request logger", "tag", tag)
		early.Info("early logger without ctx", "tag", tag)
		plainSlog.Error("plain slog logger", "tag", tag)
		fmt.Println("raw stdout " + tag)
		return sdk.Response{Output: req.Payload}, nil
	case "test.logwait":
		path := string(req.Payload)
		req.Logger().Info("waiting for " + path)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := os.Stat(path); err == nil {
				break
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return sdk.Response{}, ctx.Err()
			}
		}
		req.Logger().Info("released")
		return sdk.Response{Output: []byte("released")}, nil
	case "test.sleep":
		if b, ok := bytes.CutPrefix(req.Payload, []byte("cpu:")); ok {
			return burn(ctx, string(b)) // "cpu:1s": keep a CPU busy for 1s of CPU time
		}
		d, err := time.ParseDuration(string(req.Payload))
		if err != nil {
			return sdk.Response{}, sdk.Fatalf("test.sleep: payload %q is not a duration like \"250ms\"", req.Payload)
		}
		select {
		case <-time.After(d):
			return sdk.Response{Output: []byte("slept " + d.String())}, nil
		case <-ctx.Done():
			return sdk.Response{}, ctx.Err()
		}
	case "test.fail":
		switch string(bytes.TrimSpace(req.Payload)) {
		case "retryable":
			return sdk.Response{}, sdk.Retryable(errors.New("test.fail: a transient failure, as asked"))
		case "fatal":
			return sdk.Response{}, sdk.Fatal(errors.New("test.fail: a permanent failure, as asked"))
		default:
			return sdk.Response{}, sdk.Fatalf("test.fail: payload must be \"retryable\" or \"fatal\", got %q", req.Payload)
		}
	case "test.flaky":
		n, err := strconv.Atoi(string(bytes.TrimSpace(req.Payload)))
		if err != nil || n < 0 {
			return sdk.Response{}, sdk.Fatalf("test.flaky: payload %q is not the number of attempts to fail", req.Payload)
		}
		if req.Attempt <= n {
			return sdk.Response{}, sdk.Retryablef("test.flaky: attempt %d of the %d set to fail", req.Attempt, n)
		}
		return sdk.Response{Output: []byte(fmt.Sprintf("attempt %d succeeded (failed attempts before it: %d)", req.Attempt, n))}, nil
	case "test.crash":
		fmt.Fprintln(os.Stderr, "test.crash: exiting mid-call, as asked")
		time.Sleep(50 * time.Millisecond)
		os.Exit(3)
	case "test.hang":
		select {} // ignores ctx on purpose
	case "test.big":
		n, err := strconv.Atoi(string(req.Payload))
		if err != nil || n < 0 {
			return sdk.Response{}, sdk.Fatalf("test.big: payload %q is not a byte count", req.Payload)
		}
		return sdk.Response{Output: bytes.Repeat([]byte{'x'}, n)}, nil
	case "test.panic":
		panic("test.panic: as asked")
	}
	return sdk.Response{}, sdk.Fatalf("unknown type %q", req.Type)
}

func main() { sdk.Serve(testHandler{}) }

// burn spins until the process has used d (a duration like "1s") more CPU time, for
// tests of CPU accounting.
func burn(ctx context.Context, payload string) (sdk.Response, error) {
	d, err := time.ParseDuration(payload)
	if err != nil || d <= 0 {
		return sdk.Response{}, sdk.Fatalf("test.sleep: payload \"cpu:%s\" is not a positive duration like \"cpu:1s\"", payload)
	}
	start := processCPU()
	x := uint64(1)
	for processCPU()-start < d {
		for i := 0; i < 100000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if ctx.Err() != nil {
			return sdk.Response{}, ctx.Err()
		}
	}
	return sdk.Response{Output: []byte(fmt.Sprintf("burnt %v (%d)", d, x%10))}, nil
}

// processCPU is the process's user+system CPU time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
