package pgtest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

var benchSeq atomic.Int64

// DurablePath runs b.N tasks through s's durable path and reports tasks/s: Create,
// Lease, Update to running, Update to succeeded (ending the attempt), each committed
// before it returns, from 8 × GOMAXPROCS callers at once (the server's submitters and
// dispatchers). It is shared by the store benchmarks and the River baseline.
func DurablePath(b *testing.B, s store.Store) {
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("b%d", benchSeq.Add(1))
			if _, _, err := s.Create(ctx, store.Task{ID: id, Type: "noop", Payload: []byte("{}"), Class: store.Batch,
				MaxAttempts: 3, Tenant: "default"}); err != nil {
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
