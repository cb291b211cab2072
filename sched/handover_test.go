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
// written on its own (Lease), with another task's change (UpdateLease), or with the
// task's creation (CreateLease).
type leaseWrites struct {
	store.Store
	mu         sync.Mutex
	alone      []string // tasks leased by Lease
	withUpd    []string // tasks leased by UpdateLease
	withCreate []string // tasks leased by CreateLease
}

func (l *leaseWrites) CreateLease(ctx context.Context, t store.Task, now time.Time, g store.Grant) (store.Task, bool, error) {
	st, created, err := l.Store.CreateLease(ctx, t, now, g)
	if err == nil && created && st.State == store.Leased {
		l.mu.Lock()
		l.withCreate = append(l.withCreate, st.ID)
		l.mu.Unlock()
	}
	return st, created, err
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

// TestSubmitLeasesAtOnce: a task submitted while an agent has a free slot for it and
// none of its type waits is stored already leased (CreateLease: one commit for the
// submit and the lease) and runs; one submitted while the slot is busy is queued and
// leased by the dispatcher once the slot frees, before a task submitted after it.
func TestSubmitLeasesAtOnce(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lw := &leaseWrites{Store: st}
	ts := startServerOn(t, fastConfig(), lw)
	release := make(chan struct{})
	var mu sync.Mutex
	var order []string
	startAgentWith(t, ts, "s1", session.Capacity{}, map[string]int{"one": 1}, &fakeExec{types: []session.TaskType{{Name: "one"}},
		fn: func(ctx context.Context, tk session.Task) session.Result {
			mu.Lock()
			order = append(order, string(tk.Payload))
			mu.Unlock()
			if string(tk.Payload) == "hold" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return session.Result{Output: tk.Payload}
		}})
	for end := time.Now().Add(time.Minute); len(ts.srv.Agents()) < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the agent never registered")
		}
	}
	hold := submit(t, ts, &paddockv1.TaskSpec{Type: "one", Payload: []byte("hold"), MaxAttempts: 1})
	if hold.GetState() != paddockv1.State_STATE_LEASED {
		t.Fatalf("a task submitted to an idle agent is %v when the submit returns; want leased", hold.GetState())
	}
	for end := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if busy, slots := typeSlots(ts, "one"); slots == 1 && busy == 1 {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the held task never took the slot")
		}
	}
	queued := submit(t, ts, &paddockv1.TaskSpec{Type: "one", Payload: []byte("queued"), MaxAttempts: 1})
	if queued.GetState() != paddockv1.State_STATE_QUEUED {
		t.Fatalf("a task submitted while the only slot is busy is %v; want queued", queued.GetState())
	}
	close(release)
	for _, id := range []string{hold.GetId(), queued.GetId()} {
		if tk := wait(t, ts, id, time.Minute); tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("task %s: %v %s", id, tk.GetState(), tk.GetError())
		}
	}
	// The slot is freed and the type's queue seen empty a moment after the queued task's
	// end is stored: submit one at a time until one is leased at submit.
	var last *paddockv1.Task
	for end := time.Now().Add(30 * time.Second); ; {
		last = submit(t, ts, &paddockv1.TaskSpec{Type: "one", Payload: []byte("last"), MaxAttempts: 1})
		if tk := wait(t, ts, last.GetId(), time.Minute); tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("task %s: %v %s", last.GetId(), tk.GetState(), tk.GetError())
		}
		if last.GetState() == paddockv1.State_STATE_LEASED {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no task submitted to the idle agent for 30 s was leased at submit (the last was %v)", last.GetState())
		}
		time.Sleep(20 * time.Millisecond)
	}
	lw.mu.Lock()
	alone, withCreate := slices.Clone(lw.alone), slices.Clone(lw.withCreate)
	lw.mu.Unlock()
	if !slices.Contains(withCreate, hold.GetId()) || !slices.Contains(withCreate, last.GetId()) || slices.Contains(alone, hold.GetId()) {
		t.Fatalf("leased with their creation %v, alone %v; want the tasks submitted to a free slot (%s, %s) leased with their creation",
			withCreate, alone, hold.GetId(), last.GetId())
	}
	if !slices.Contains(alone, queued.GetId()) {
		t.Fatalf("the queued task %s was not leased by the dispatcher (alone %v, with creation %v)", queued.GetId(), alone, withCreate)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(order) < 3 || !slices.Equal(order[:2], []string{"hold", "queued"}) {
		t.Fatalf("the tasks ran in the order %v; want hold, queued, then the last ones", order)
	}
}
