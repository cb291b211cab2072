package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// BenchmarkLifecycle is the store's share of one durable task as the server drives it:
// tasks created in batches of 100, read ready and leased in rounds of 64 (as the
// dispatch loop does), then each started and succeeded by 16 concurrent callers (as
// acks and reports arrive). It reports tasks/s and the CPU of this process per task:
//
//	CGO_ENABLED=0 go test -run '^$' -bench Lifecycle -benchtime 20000x ./sched/store/sqlite
func BenchmarkLifecycle(b *testing.B) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{Synchronous: "NORMAL"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	leased := make(chan store.Task, 256)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range leased {
				u, err := store.Transition(store.Task{ID: t.ID, State: store.Leased, LeaseID: t.LeaseID}, store.EvStart, store.Change{Now: time.Now()})
				if err == nil {
					t, err = s.Update(ctx, u)
				}
				if err == nil {
					u, err = store.Transition(t, store.EvSucceed, store.Change{Now: time.Now()})
				}
				if err == nil {
					out := []byte("ok")
					u.Output = &out
					_, err = s.Update(ctx, u)
				}
				if err != nil {
					b.Error(err)
				}
			}
		}()
	}
	b.ResetTimer()
	commits0 := sqlite.Commits.Load()
	cpu0 := processCPU()
	start := time.Now()
	var created sync.WaitGroup
	created.Add(1)
	go func() { // the submitters
		defer created.Done()
		for i := 0; i < b.N; i += 100 {
			var ts []store.Task
			for j := i; j < min(i+100, b.N); j++ {
				ts = append(ts, storetest.NewTask(fmt.Sprintf("t%07d", j), "echo"))
			}
			if _, _, err := s.CreateBatch(ctx, ts); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	for done := 0; done < b.N; { // the dispatch loop
		ready, err := s.Ready(ctx, "echo", time.Now(), 2*64+8)
		if err != nil {
			b.Fatal(err)
		}
		var grants []store.Grant
		for _, t := range ready[:min(len(ready), 64)] {
			grants = append(grants, store.Grant{TaskID: t.ID, AgentID: "a", ExpiresAt: time.Now().Add(time.Minute), Secret: "s"})
		}
		ls, err := s.Lease(ctx, time.Now(), grants)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range ls {
			leased <- t
		}
		done += len(ls)
		if len(ls) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	close(leased)
	wg.Wait()
	created.Wait()
	el := time.Since(start)
	b.ReportMetric(float64(b.N)/el.Seconds(), "tasks/s")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/task")
	b.ReportMetric(float64(sqlite.Commits.Load()-commits0)/float64(b.N), "commits/task")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
