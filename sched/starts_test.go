package sched_test

import (
	"context"
	"testing"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// TestDeferredStart: a short batch task's start is written with its result (leased →
// succeeded, its start time kept between its lease and its end); a longer one is
// recorded running while it runs; an online task's start is written at once.
func TestDeferredStart(t *testing.T) {
	needBins(t)
	ts := startServer(t, fastConfig())
	startRealAgent(t, ts.agentAddr, "ds-1", "")
	ctx := context.Background()

	short := submit(t, ts, &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("x")}).GetId()
	wait(t, ts, short, time.Minute)
	st, err := ts.srv.Store().Get(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != store.Succeeded || st.StartedAt.IsZero() || st.StartedAt.Before(st.LeasedAt) || st.StartedAt.After(st.FinishedAt) {
		t.Fatalf("short task: %s leased %v started %v finished %v; want succeeded, started between its lease and its end", st.State, st.LeasedAt, st.StartedAt, st.FinishedAt)
	}

	long := submit(t, ts, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("3s")}).GetId()
	var running store.Task
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if running, err = ts.srv.Store().Get(ctx, long); err == nil && running.State != store.Queued && running.State != store.Leased {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if running.State != store.Running || running.StartedAt.IsZero() || running.StartedAt.Before(running.LeasedAt) {
		t.Fatalf("long task while it runs: %s leased %v started %v; want running with its start recorded", running.State, running.LeasedAt, running.StartedAt)
	}
	if d := running.UpdatedAt.Sub(running.StartedAt); d < 99*time.Millisecond { // the deferral, in whole ms
		t.Fatalf("long task: start %v written at %v, %v after the ack; want the write deferred by 100ms", running.StartedAt, running.UpdatedAt, d)
	}
	wait(t, ts, long, time.Minute)
	if done, _ := ts.srv.Store().Get(ctx, long); done.State != store.Succeeded || !done.StartedAt.Equal(running.StartedAt) {
		t.Fatalf("long task done: %s started %v; want succeeded, started %v", done.State, done.StartedAt, running.StartedAt)
	}

	online := submit(t, ts, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("3s"), Class: paddockv1.Class_CLASS_ONLINE}).GetId()
	var first store.Task
	for time.Now().Before(deadline.Add(time.Minute)) {
		if first, err = ts.srv.Store().Get(ctx, online); err == nil && first.State != store.Queued && first.State != store.Leased {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if first.State != store.Running || first.StartedAt.IsZero() || !first.UpdatedAt.Equal(first.StartedAt) {
		t.Fatalf("online task: %s started %v written %v; want running, written with the ack", first.State, first.StartedAt, first.UpdatedAt)
	}
	wait(t, ts, online, time.Minute)
}
