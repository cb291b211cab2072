package postgres_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// BenchmarkDurable measures a task's durable path through each store in the same run:
// Create, Lease, Update to running, Update to succeeded (ending the attempt), each
// committed before it returns; 16 callers at once (the server's submitters and
// dispatchers). The sqlite sub-benchmark is the baseline: compare tasks/s.
//
//	go test -run '^$' -bench Durable -benchtime 5000x ./sched/store/postgres
func BenchmarkDurable(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchDurable(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		srv := pgtest.Start(b)
		s, err := postgres.Open(context.Background(), srv.NewDatabase(b), postgres.Options{MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchDurable(b, s)
	})
}

var benchSeq atomic.Int64

func benchDurable(b *testing.B, s store.Store) {
	ctx := context.Background()
	b.SetParallelism(8) // 8 × GOMAXPROCS callers
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("b%d", benchSeq.Add(1))
			if _, _, err := s.Create(ctx, storetest.NewTask(id, "noop")); err != nil {
				b.Error(err)
				return
			}
			now := time.Now()
			ls, err := s.Lease(ctx, now, []store.Grant{{TaskID: id, AgentID: "ag", ExpiresAt: now.Add(time.Minute), Secret: "s"}})
			if err != nil || len(ls) != 1 {
				b.Errorf("Lease(%s) = %v, %v", id, ls, err)
				return
			}
			lid := ls[0].LeaseID
			if _, err := s.Update(ctx, store.Update{TaskID: id, From: []store.State{store.Leased}, LeaseID: lid, To: store.Running, Now: now, Started: true}); err != nil {
				b.Error(err)
				return
			}
			out := []byte("ok")
			if _, err := s.Update(ctx, store.Update{TaskID: id, From: []store.State{store.Leased, store.Running}, LeaseID: lid,
				To: store.Succeeded, Now: time.Now(), Output: &out, EndAttempt: true}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
}
