package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// BenchmarkReady is one dispatch round's read of ready tasks from 2,000 queued ones,
// asking for the same number each time (same-limit) and for a number that changes
// every round (changing-limit: 1..16, as the dispatcher's free slots do). The two
// should cost about the same: a LIMIT bound as a changing parameter made SQLite
// prepare the statement again on every call (2.6× the CPU before queryLimit).
//
//	CGO_ENABLED=0 go test -run '^$' -bench Ready -benchtime 20000x ./sched/store/sqlite
func BenchmarkReady(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{Synchronous: "NORMAL"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	var ts []store.Task
	for i := 0; i < 2000; i++ {
		ts = append(ts, store.Task{ID: fmt.Sprint("t", i), Type: "echo", Tenant: "default", Payload: []byte("x"),
			State: store.Queued, CreatedAt: now, MaxAttempts: 3})
	}
	if _, _, err := s.CreateBatch(ctx, ts); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		limit func(i int) int
	}{
		{"same-limit", func(int) int { return 8 }},
		{"changing-limit", func(i int) int { return 1 + i%16 }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cpu0 := processCPU()
			for i := 0; i < b.N; i++ {
				limit := bc.limit(i)
				got, err := s.Ready(ctx, "echo", now.Add(time.Duration(i)), limit)
				if err != nil || len(got) != limit {
					b.Fatalf("Ready(limit %d) = %d tasks, %v", limit, len(got), err)
				}
			}
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/call")
		})
	}
}
