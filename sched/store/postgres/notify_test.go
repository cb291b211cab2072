package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// TestNotify: one server queues tasks, another hears their types: a create and a
// requeue notify, a lease and a start do not; after PostgreSQL restarts, the listener
// says "" (look at everything) and hears again.
func TestNotify(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := srv.NewDatabase(t)
	a, err := postgres.Open(ctx, dsn, postgres.Options{Notify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
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
	if got := []string{next(), next(), next()}; got[0] != "x" || got[1] != "x" || got[2] != "y" {
		t.Fatalf("heard %q, want [x x y] (create, requeue, create; no lease or start)", got)
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
