package sched_test

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// leaseWrites is a store that records, for each task leased, whether its lease was
// written on its own (Lease) or with another task's change (UpdateLease).
type leaseWrites struct {
	store.Store
	mu      sync.Mutex
	alone   []string // tasks leased by Lease
	withUpd []string // tasks leased by UpdateLease
}

func (l *leaseWrites) Lease(ctx context.Context, now time.Time, grants []store.Grant) ([]store.Task, error) {
	ts, err := l.Store.Lease(ctx, now, grants)
	l.mu.Lock()
	for _, t := range ts {
		l.alone = append(l.alone, t.ID)
	}
	l.mu.Unlock()
	return ts, err
}

func (l *leaseWrites) UpdateLease(ctx context.Context, u store.Update, now time.Time, grants []store.Grant) (store.Task, []store.Task, error) {
	t, ts, err := l.Store.UpdateLease(ctx, u, now, grants)
	l.mu.Lock()
	for _, t := range ts {
		l.withUpd = append(l.withUpd, t.ID)
	}
	l.mu.Unlock()
	return t, ts, err
}

// TestHandOverLeasesWithThePreemption: an online task handed the slot of a preempted
// batch task is leased in the same store write as the preemption (one commit on its
// path, not the preemption's and then its own). Two batch tasks that end only when the
// test lets them fill both slots of an in-process agent; the online task submitted then
// can start only through a hand-over. Every batch task still succeeds, charged one
// attempt.
func TestHandOverLeasesWithThePreemption(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lw := &leaseWrites{Store: st}
	cfg := fastConfig()
	cfg.HeartbeatInterval, cfg.LeaseTTL = 10*time.Minute, 30*time.Minute // no heartbeat frees a booked slot
	ts := startServerOn(t, cfg, lw)
	release := make(chan struct{})
	startAgentWith(t, ts, "h1", session.Capacity{}, map[string]int{"hold": 2}, &fakeExec{types: []session.TaskType{{Name: "hold"}},
		fn: func(ctx context.Context, tk session.Task) session.Result {
			if string(tk.Payload) == "online" {
				return session.Result{Output: []byte("ran")}
			}
			select {
			case <-release:
				return session.Result{Output: []byte("released")}
			case <-ctx.Done():
				return session.Result{Error: "stopped"}
			}
		}})
	batch := fillSlots(t, ts, "hold", 2, "batch")
	on := submit(t, ts, &paddockv1.TaskSpec{Type: "hold", Payload: []byte("online"), Class: paddockv1.Class_CLASS_ONLINE}).GetId()
	if tk := wait(t, ts, on, time.Minute); tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("online task %s: %v %s", on, tk.GetState(), tk.GetError())
	}
	lw.mu.Lock()
	alone, withUpd := slices.Clone(lw.alone), slices.Clone(lw.withUpd)
	lw.mu.Unlock()
	if slices.Contains(alone, on) || !slices.Contains(withUpd, on) {
		t.Fatalf("the online task's lease was written alone %v, with a preemption %v; want it written with the preemption (UpdateLease) only", alone, withUpd)
	}
	close(release)
	checkBatchSucceeded(t, ts, batch)
}
