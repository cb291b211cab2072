package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// TestNotify: one server queues tasks, another hears their types: a create and a
// requeue notify (sent after the commit, batched), a lease and a start do not; after PostgreSQL restarts, the listener
// says "" (look at everything) and hears again.
func TestNotify(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := srv.NewDatabase(t)
	a := openStore(t, dsn, true)
	b := openStore(t, dsn, false)
	wake := b.Notify(ctx)
	next := func() string {
		t.Helper()
		select {
		case typ := <-wake:
			return typ
		case <-time.After(time.Minute): // a failure bound, not a speed target
			t.Fatal("no notification within a minute")
			return ""
		}
	}
	// The listener may not be listening yet: create until it hears.
	for i := 0; ; i++ {
		if _, _, err := a.Create(ctx, storetest.NewTask("warm"+string(rune('a'+i)), "warm")); err != nil {
			t.Fatal(err)
		}
		select {
		case typ := <-wake:
			if typ != "warm" {
				t.Fatalf("heard %q, want warm", typ)
			}
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	// Late wake-ups of the warm-up come before this one.
	if _, _, err := a.Create(ctx, storetest.NewTask("sync", "sync")); err != nil {
		t.Fatal(err)
	}
	for next() != "sync" {
	}
	if _, _, err := a.Create(ctx, storetest.NewTask("x1", "x")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ls, err := a.Lease(ctx, now, []store.Grant{{TaskID: "x1", AgentID: "ag", ExpiresAt: now.Add(time.Minute)}})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease = %v, %v", ls, err)
	}
	id := ls[0].LeaseID
	if _, err := a.Update(ctx, store.Update{TaskID: "x1", From: []store.State{store.Leased}, LeaseID: id, To: store.Running, Now: now, Started: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(ctx, store.Update{TaskID: "x1", From: []store.State{store.Running}, LeaseID: id, To: store.Queued, Now: now, EndAttempt: true, Retryable: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Create(ctx, storetest.NewTask("y1", "y")); err != nil {
		t.Fatal(err)
	}
	// Wake-ups gathered while one batch is sent go out together, the same type once.
	var got []string
	for len(got) == 0 || got[len(got)-1] != "y" {
		got = append(got, next())
	}
	if len(got) < 2 || len(got) > 3 || got[0] != "x" || (len(got) == 3 && got[1] != "x") {
		t.Fatalf("heard %q, want [x x y] or [x y] (create, requeue, create; no lease or start)", got)
	}
	srv.Restart(t)
	if got := next(); got != "" {
		t.Fatalf("after a restart heard %q, want \"\" (look at every type)", got)
	}
	for i := 0; i < 50; i++ { // a's pool drops its dead connections as they fail
		if _, _, err = a.Create(ctx, storetest.NewTask("z1", "z")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "z" {
		t.Fatalf("after the restart heard %q, want z", got)
	}
	cancel()
	for range wake { // closed when ctx ends
	}
}

// TestWakeupsCancel: one server requests the cancel of a running task and of a queued
// one; another server's Wakeups hears the type of the created tasks and the id of the
// running one only (a queued task is cancelled at once: no agent to tell).
func TestWakeupsCancel(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := srv.NewDatabase(t)
	a := openStore(t, dsn, true)
	if openStore(t, dsn, false).Wakeups(ctx) != nil {
		t.Fatal("Wakeups without Options.Notify returned a channel; want nil (the server polls)")
	}
	b := openStore(t, dsn, true)
	wake := b.Wakeups(ctx)
	next := func() store.Wakeup {
		t.Helper()
		select {
		case w := <-wake:
			return w
		case <-time.After(time.Minute): // a failure bound, not a speed target
			t.Fatal("no wake-up within a minute")
			return store.Wakeup{}
		}
	}
	for i := 0; ; i++ { // until the listener listens
		if _, _, err := a.Create(ctx, storetest.NewTask(fmt.Sprintf("warm%d", i), "warm")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wake:
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	if _, _, err := a.Create(ctx, storetest.NewTask("sync", "sync")); err != nil {
		t.Fatal(err)
	}
	for next().Type != "sync" {
	}
	for _, id := range []string{"run1", "q1"} {
		if _, _, err := a.Create(ctx, storetest.NewTask(id, "c")); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	ls, err := a.Lease(ctx, now, []store.Grant{{TaskID: "run1", AgentID: "ag", ExpiresAt: now.Add(time.Minute)}})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease = %v, %v", ls, err)
	}
	if _, err := a.Update(ctx, store.Update{TaskID: "q1", From: []store.State{store.Queued}, To: store.Cancelled, Now: now, CancelRequested: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Update(ctx, store.Update{TaskID: "run1", From: []store.State{store.Leased}, LeaseID: ls[0].LeaseID, To: store.Leased, Now: now, CancelRequested: true}); err != nil {
		t.Fatal(err)
	}
	got := []store.Wakeup{next(), next(), next()}
	want := []store.Wakeup{{Type: "c"}, {Type: "c"}, {Cancel: "run1"}}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("heard %+v, want %+v (two creates, then the running task's cancel only)", got, want)
		}
	}
}

// openStore opens the database at dsn, closed when t ends.
func openStore(t *testing.T, dsn string, notify bool) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{Notify: notify})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
