package runner

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestStartClock: a start's deadline passes after StartTimeout without the process
// using CPU, and after startLimitFactor StartTimeouts however busy it is.
func TestStartClock(t *testing.T) {
	if processCPU(os.Getpid()) == 0 {
		t.Skip("no /proc/<pid>/stat here: the start clock is plain wall time")
	}
	t.Run("idle process", func(t *testing.T) {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		ctx, stop := startClock(context.Background(), cmd.Process.Pid, 300*time.Millisecond)
		defer stop()
		<-ctx.Done()
		if cause := context.Cause(ctx); !errors.Is(cause, errNoProgress) || !strings.Contains(cause.Error(), "used no CPU for 300ms") {
			t.Fatalf("cause %v", cause)
		}
	})
	t.Run("busy process", func(t *testing.T) {
		quit := make(chan struct{})
		defer close(quit)
		for range 2 { // this process keeps using CPU, on two threads
			go func() {
				for {
					select {
					case <-quit:
						return
					default:
					}
				}
			}()
		}
		begin := time.Now()
		// 1 s: long enough that a machine loaded many times over its cores still gives
		// this spinning process CPU in every window (500 ms failed once at load ~50).
		const timeout = time.Second
		ctx, stop := startClock(context.Background(), os.Getpid(), timeout)
		defer stop()
		<-ctx.Done()
		cause := context.Cause(ctx)
		if !errors.Is(cause, errNoProgress) || !strings.Contains(cause.Error(), "10 times StartTimeout") {
			t.Fatalf("cause %v", cause)
		}
		if el := time.Since(begin); el < startLimitFactor*timeout {
			t.Fatalf("a busy start ended after %v, before %d StartTimeouts", el, startLimitFactor)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		ctx, stop := startClock(context.Background(), os.Getpid(), time.Hour)
		stop()
		if cause := context.Cause(ctx); errors.Is(cause, errNoProgress) {
			t.Fatalf("a stopped clock's cause %v", cause)
		}
	})
}
