package runner_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
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
