package runner_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/plugins/runner"
)

// BenchmarkEcho measures calls through the plugin boundary (agent → gRPC over
// AutoMTLS → handler process → back) with 1 and 16 calls in flight. It reports
// calls/s and the mean and p99 latency of one call.
//
//	go test -run '^$' -bench Echo -benchtime 3s ./plugins/runner
func BenchmarkEcho(b *testing.B) {
	r := newRunner(b, nil)
	payload := []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	for _, inflight := range []int{1, 16} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			var next atomic.Int64
			lat := make([]time.Duration, b.N)
			var wg sync.WaitGroup
			var failed atomic.Int64
			b.ResetTimer()
			start := time.Now()
			for range inflight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						res := r.Execute(context.Background(), runner.Task{Type: "test.echo", Payload: payload})
						lat[i] = time.Since(t0)
						if !res.OK() {
							failed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d calls failed", n)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			b.ReportMetric(float64(sum.Microseconds())/float64(b.N), "µs/call-mean")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "µs/call-p99")
		})
	}
}

// BenchmarkEchoBatch measures the same calls as BenchmarkEcho sent through
// ExecuteBatch, batch tasks per HandleBatch call, against one Handle call each with
// as many in flight (unbatched): calls/s and the CPU time of the agent's and the
// handler's processes together per call.
//
//	go test -run '^$' -bench EchoBatch -benchtime 20000x ./plugins/runner
func BenchmarkEchoBatch(b *testing.B) {
	r := newRunner(b, nil)
	payload := []byte("x")
	for _, batch := range []int{16, 64} {
		for _, batched := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/batched=%v", batch, batched), func(b *testing.B) {
				hpid := r.Status()[0].PID
				cpu0 := selfCPU() + procCPU(hpid)
				b.ResetTimer()
				start := time.Now()
				var failed atomic.Int64
				for done := 0; done < b.N; done += batch {
					n := min(batch, b.N-done)
					calls := make([]runner.Call, n)
					for i := range calls {
						calls[i] = runner.Call{Task: runner.Task{Type: "test.echo", Payload: payload}}
					}
					if batched {
						r.ExecuteBatch(context.Background(), calls, func(_ int, res runner.Result) {
							if !res.OK() {
								failed.Add(1)
							}
						})
						continue
					}
					var wg sync.WaitGroup
					for _, c := range calls {
						wg.Add(1)
						go func() {
							defer wg.Done()
							if !r.Execute(context.Background(), c.Task).OK() {
								failed.Add(1)
							}
						}()
					}
					wg.Wait()
				}
				elapsed := time.Since(start)
				cpu := selfCPU() + procCPU(hpid) - cpu0
				b.StopTimer()
				if n := failed.Load(); n > 0 {
					b.Fatalf("%d calls failed", n)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/call")
			})
		}
	}
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is process pid's user+system CPU time from /proc (0 where there is none).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}
