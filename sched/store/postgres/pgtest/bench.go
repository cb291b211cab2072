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

// Pipeline runs b.N tasks through s the way a server does and reports tasks/s:
// 8 × GOMAXPROCS submitters Create one task each at a time; one dispatcher reads
// Ready (up to 100) and leases what it read in one Lease call; 100 workers take the
// leased tasks and succeed them, start and result in one Update (as the server writes
// a batch task that ends within its start delay, sched/starts.go). Every call is committed before it returns. This is the shape
// River's client has (inserts one at a time, fetches in batches, 100 workers), for the
// River baseline.
func Pipeline(b *testing.B, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	typ := fmt.Sprintf("noop%d", benchSeq.Add(1))
	leased := make(chan store.Task, 1024)
	var done atomic.Int64
	finished := make(chan struct{})
	fail := func(err error) {
		b.Error(err)
		cancel()
	}
	b.ResetTimer()
	start := time.Now()
	go func() { // the dispatcher
		defer close(leased)
		for ctx.Err() == nil {
			now := time.Now()
			ready, err := s.Ready(ctx, typ, now, 100)
			if err != nil {
				if ctx.Err() == nil {
					fail(err)
				}
				return
			}
			if len(ready) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			gs := make([]store.Grant, len(ready))
			for i, t := range ready {
				gs[i] = store.Grant{TaskID: t.ID, AgentID: "ag", ExpiresAt: now.Add(time.Minute), Secret: "s"}
			}
			ls, err := s.Lease(ctx, now, gs)
			if err != nil {
				if ctx.Err() == nil {
					fail(err)
				}
				return
			}
			for _, t := range ls {
				leased <- t
			}
		}
	}()
	for w := 0; w < 100; w++ {
		go func() {
			for t := range leased {
				// A batch task that ends within the server's start delay has its start
				// written with its result, in one Update (sched/starts.go): a no-op does.
				out, now := []byte("ok"), time.Now()
				if _, err := s.Update(ctx, store.Update{TaskID: t.ID, From: []store.State{store.Leased, store.Running}, LeaseID: t.LeaseID,
					To: store.Succeeded, Now: now, Started: true, StartedAt: now, Output: &out, EndAttempt: true}); err != nil {
					fail(err)
					return
				}
				if done.Add(1) == int64(b.N) {
					close(finished)
				}
			}
		}()
	}
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("p%d", benchSeq.Add(1))
			if _, _, err := s.Create(ctx, store.Task{ID: id, Type: typ, Payload: []byte("{}"), Class: store.Batch,
				MaxAttempts: 3, Tenant: "default"}); err != nil {
				fail(err)
				return
			}
		}
	})
	select {
	case <-finished:
	case <-ctx.Done():
		return
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
}
