package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

// openTest opens a store on a new database of a new server, closed when t ends.
func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.Start(t).NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestBatchFallback: a statement that fails inside a batch rolls the whole batch back;
// the committer then runs each statement alone, so the others still commit, the
// failing one gets its own error, and no write is applied twice.
func TestBatchFallback(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
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
	ctx := context.Background()
	s := openTest(t)
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

// TestMergedBatch: a batch of many reports of one shape runs as one statement
// (merge.go), and each caller still gets the answer it would get alone: the report
// under the current lease changes its task and ends its attempt; one under a stale
// lease, or a second report of a task already in the batch, changes nothing.
func TestMergedBatch(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	const n = 2 * minMerge
	now := time.Now()
	var ops []*writeOp
	var want []bool
	out := []byte("ok")
	for i := range n {
		id := fmt.Sprintf("m%02d", i)
		if _, _, err := s.Create(ctx, store.Task{ID: id, Type: "noop", Class: store.Batch, MaxAttempts: 3, Tenant: "default"}); err != nil {
			t.Fatal(err)
		}
		ls, err := s.Lease(ctx, now, []store.Grant{{TaskID: id, AgentID: "ag", ExpiresAt: now.Add(time.Minute), Secret: "s"}})
		if err != nil || len(ls) != 1 {
			t.Fatalf("Lease(%s) = %v, %v", id, ls, err)
		}
		lid := ls[0].LeaseID
		if i%5 == 3 {
			lid++ // a stale or foreign lease: must not match
		}
		u := store.Update{TaskID: id, From: []store.State{store.Leased, store.Running}, LeaseID: lid, To: store.Succeeded,
			Now: now, Output: &out, EndAttempt: true, Usage: store.Usage{Wall: time.Second, Host: "h"}}
		for rep := 0; rep < 1+i%7/6; rep++ { // m06 and m13 twice
			o, err := s.updateOp(u)
			if err != nil {
				t.Fatal(err)
			}
			o.done = make(chan error, 1)
			o.state.Store(opTaken)
			ops = append(ops, o)
			want = append(want, i%5 != 3 && rep == 0)
		}
	}
	if q, _, ok := mergedQuery(ops[0].merge, ops[0].q, [][]any{ops[0].args, ops[1].args}); !ok {
		t.Fatalf("the reports were not merged: %s", ops[0].q)
	} else if !strings.Contains(q, "unnest(") {
		t.Fatalf("merged statement without unnest: %s", q)
	}
	s.w.run(ops)
	for i, o := range ops {
		if err := <-o.done; err != nil {
			t.Fatalf("op %d (%s): %v", i, o.key, err)
		}
		if got := len(o.tasks) == 1; got != want[i] {
			t.Errorf("op %d (%s) changed its task: %v; want %v", i, o.key, got, want[i])
		}
		if len(o.tasks) == 1 && (o.tasks[0].ID != o.key || o.tasks[0].State != store.Succeeded) {
			t.Errorf("op %d (%s) got task %s in state %s", i, o.key, o.tasks[0].ID, o.tasks[0].State)
		}
	}
	for i := range n {
		id := fmt.Sprintf("m%02d", i)
		tk, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		as, err := s.Attempts(ctx, id)
		if err != nil || len(as) != 1 {
			t.Fatalf("Attempts(%s) = %v, %v", id, as, err)
		}
		if i%5 == 3 {
			if tk.State != store.Leased || !as[0].FinishedAt.IsZero() {
				t.Errorf("task %s (stale lease): state %s, attempt finished %v; want leased, attempt open", id, tk.State, as[0].FinishedAt)
			}
			continue
		}
		if tk.State != store.Succeeded || string(tk.Output) != "ok" || as[0].State != store.Succeeded || as[0].Usage.Host != "h" || as[0].Usage.Wall != time.Second {
			t.Errorf("task %s: state %s output %q, attempt %s host %q wall %v; want succeeded, ok, succeeded, h, 1s",
				id, tk.State, tk.Output, as[0].State, as[0].Usage.Host, as[0].Usage.Wall)
		}
	}
}
