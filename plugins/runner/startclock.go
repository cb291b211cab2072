package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// startLimitFactor bounds a start that keeps making progress: at most this many
// StartTimeouts in all.
const startLimitFactor = 10

// startPoll is how often a start's progress is sampled.
const startPoll = 250 * time.Millisecond

// errNoProgress ends a start whose process used no CPU for StartTimeout, or that
// passed startLimitFactor StartTimeouts in all.
var errNoProgress = errors.New("start timed out")

// startClock is the deadline of a handler's start (exec until its Describe answers),
// counted in time during which the process made no progress: StartTimeout of wall time
// without its CPU time (utime + stime, /proc/<pid>/stat) rising, or startLimitFactor
// StartTimeouts in all. A handler in a guest starved of CPU (forty guests on two host
// cores) starts slowly but steadily and is waited for; one stuck before it serves
// (a deadlock, a read from a terminal) uses no CPU and fails after StartTimeout, as
// before. Where /proc is not there the CPU time never rises: StartTimeout of wall time.
//
// The returned context ends with cause errNoProgress (wrapped, saying which bound)
// when the deadline passes; stop releases it.
func startClock(ctx context.Context, pid int, timeout time.Duration) (_ context.Context, stop func()) {
	sctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(max(min(startPoll, timeout/4), time.Millisecond)) // a few samples a StartTimeout
		defer t.Stop()
		begin := time.Now()
		last, lastCPU := begin, processCPU(pid)
		for {
			select {
			case <-done:
				return
			case <-sctx.Done():
				return
			case now := <-t.C:
				if cpu := processCPU(pid); cpu > lastCPU {
					last, lastCPU = now, cpu
				}
				switch {
				case now.Sub(last) >= timeout:
					cancel(fmt.Errorf("%w: the process used no CPU for %v (StartTimeout)", errNoProgress, timeout))
					return
				case now.Sub(begin) >= startLimitFactor*timeout:
					cancel(fmt.Errorf("%w: still starting after %v (%d times StartTimeout)", errNoProgress, now.Sub(begin).Round(time.Second), startLimitFactor))
					return
				}
			}
		}
	}()
	return sctx, func() { close(done); cancel(nil) }
}

// processCPU is the CPU time process pid has used, in clock ticks (0 when unknown).
func processCPU(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: the fields
	// counted start after its closing one. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return u + st
}
