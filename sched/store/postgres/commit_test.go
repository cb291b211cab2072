package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

// TestBatchFallback: a statement that fails inside a batch rolls the whole batch back;
// the committer then runs each statement alone, so the others still commit, the
// failing one gets its own error, and no write is applied twice.
func TestBatchFallback(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	s, err := Open(ctx, srv.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	task := func(id string) store.Task {
		return store.Task{ID: id, Type: "noop", Class: store.Batch, MaxAttempts: 3, Tenant: "default"}
	}
	if _, _, err := s.Create(ctx, task("dup")); err != nil {
		t.Fatal(err)
	}
	op := func(id string) *writeOp {
		q, args, err := s.insertQuery(task(id))
		if err != nil {
			t.Fatal(err)
		}
		o := &writeOp{q: q, args: args, key: id, done: make(chan error, 1)}
		o.state.Store(opTaken)
		return o
	}
	renew := &writeOp{q: `UPDATE tasks SET priority = priority + 1 WHERE id = $1`, args: []any{"dup"}, key: "dup", exec: true, done: make(chan error, 1)}
	batch := []*writeOp{op("a"), op("dup"), op("z"), renew} // "dup": the id is taken
	s.w.run(batch)
	for i, o := range batch {
		err := <-o.done
		var pe *pgconn.PgError
		switch {
		case i == 1 && (!errors.As(err, &pe) || pe.Code != "23505"):
			t.Errorf("inserting a taken id: err = %v, want a unique violation (23505)", err)
		case i != 1 && err != nil:
			t.Errorf("op %d (%s): %v; want it committed on its own", i, o.key, err)
		}
	}
	for _, id := range []string{"a", "z"} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("task %s not created after the batch fell back: %v", id, err)
		}
	}
	if d, err := s.Get(ctx, "dup"); err != nil || d.Priority != 1 {
		t.Errorf("task dup: priority %d, %v; want 1 (the update applied once)", d.Priority, err)
	}
	if n := renew.n; n != 1 {
		t.Errorf("rows changed by the update = %d; want 1", n)
	}
}

// TestAbandonedWrite: a caller whose context ends before its write is taken gets the
// context's error, and the write is never made.
func TestAbandonedWrite(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	s, err := Open(ctx, srv.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A committer with no writer: nothing is taken until one runs.
	c := newCommitter(s.pool, 0)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	q, args, err := s.insertQuery(store.Task{ID: "late", Type: "noop", Class: store.Batch, MaxAttempts: 3, Tenant: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.query(cctx, "late", q, args...); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("query with an expired context = %v; want context.DeadlineExceeded", err)
	}
	c.wg.Add(1)
	go c.loop() // a writer now drains the queue: it must skip the abandoned write
	if _, err := c.execute(ctx, "", `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	c.close()
	if _, err := s.Get(ctx, "late"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(late) = %v; want ErrNotFound (the abandoned create must not run)", err)
	}
}
