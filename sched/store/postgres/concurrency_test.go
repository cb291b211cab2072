package postgres_test

// Concurrency is the part of the store contract about racing callers; it belongs in
// storetest (and will move there), and runs here against both stores.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

var c0 = time.UnixMilli(1_800_000_000_000)

// Concurrency runs the concurrency contract. open returns n stores on one new, empty
// database (n "servers"); Concurrency closes them.
func Concurrency(t *testing.T, open func(t *testing.T, n int) []store.Store) {
	tests := []struct {
		name    string
		servers int
		fn      func(t *testing.T, ss []store.Store)
	}{
		{"UpdateRace", 4, testUpdateRace},
		{"CancelLeaseRace", 2, testCancelLeaseRace},
		{"LeaseRace", 4, testLeaseRace},
		{"IdempotencyRace", 4, testIdempotencyRace},
		{"Errors", 1, testErrors},
		{"Closed", 1, testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ss := open(t, tc.servers)
			t.Cleanup(func() {
				for _, s := range ss {
					s.Close()
				}
			})
			tc.fn(t, ss)
		})
	}
}

func create(t *testing.T, s store.Store, id string) {
	t.Helper()
	if _, created, err := s.Create(context.Background(), storetest.NewTask(id, "echo")); err != nil || !created {
		t.Fatalf("Create(%s) = created %v, %v", id, created, err)
	}
}

func lease1(t *testing.T, s store.Store, id, agent string) store.Task {
	t.Helper()
	ls, err := s.Lease(context.Background(), c0, []store.Grant{{TaskID: id, AgentID: agent, ExpiresAt: c0.Add(time.Minute), Secret: "s-" + agent}})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease(%s) = %v, %v", id, ls, err)
	}
	return ls[0]
}

// testUpdateRace: many goroutines on several servers race to end the same lease, each
// with its own outcome; exactly one applies and the task and its attempt show it.
func testUpdateRace(t *testing.T, ss []store.Store) {
	ctx := context.Background()
	const tasks, racers = 10, 16
	for i := 0; i < tasks; i++ {
		id := fmt.Sprintf("t%d", i)
		create(t, ss[0], id)
		l := lease1(t, ss[0], id, "ag")
		type result struct {
			racer int
			task  store.Task
			err   error
		}
		results := make(chan result, racers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for r := 0; r < racers; r++ {
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				<-start
				out := []byte(fmt.Sprintf("racer-%d", r))
				u := store.Update{TaskID: id, From: []store.State{store.Leased, store.Running}, LeaseID: l.LeaseID, Now: c0,
					Output: &out, EndAttempt: true}
				switch r % 3 {
				case 0:
					u.To = store.Succeeded
				case 1:
					msg := "failed by " + string(out)
					u.To, u.Error = store.Failed, &msg
				case 2: // an expiry requeues it
					msg := "expired"
					u.To, u.Error, u.Retryable = store.Queued, &msg, true
				}
				tk, err := ss[r%len(ss)].Update(ctx, u)
				results <- result{r, tk, err}
			}(r)
		}
		close(start)
		wg.Wait()
		close(results)
		winner := -1
		for res := range results {
			switch {
			case res.err == nil:
				if winner >= 0 {
					t.Fatalf("task %s: racers %d and %d both applied their change", id, winner, res.racer)
				}
				winner = res.racer
			case errors.Is(res.err, store.ErrConflict):
				if res.task.State == store.Leased {
					t.Fatalf("task %s: racer %d lost, but the task it got back is still leased: %+v", id, res.racer, res.task)
				}
			default:
				t.Fatalf("task %s: racer %d: %v, want success or ErrConflict", id, res.racer, res.err)
			}
		}
		if winner < 0 {
			t.Fatalf("task %s: no racer applied its change", id)
		}
		got, err := ss[0].Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("racer-%d", winner)
		if string(got.Output) != want {
			t.Fatalf("task %s: output %q, want the winner's %q", id, got.Output, want)
		}
		att, err := ss[0].Attempts(ctx, id)
		if err != nil || len(att) != 1 || att[0].State != got.State {
			t.Fatalf("task %s (%s): attempts %+v, %v; want one, ended %s", id, got.State, att, err, got.State)
		}
	}
}

// testCancelLeaseRace: a cancel of a queued task races its lease on another server:
// the task is leased or cancelled, never both.
func testCancelLeaseRace(t *testing.T, ss []store.Store) {
	ctx := context.Background()
	const tasks = 40
	for i := 0; i < tasks; i++ {
		create(t, ss[0], fmt.Sprintf("t%d", i))
	}
	leased, cancelled := 0, 0
	for i := 0; i < tasks; i++ {
		id := fmt.Sprintf("t%d", i)
		var ls []store.Task
		var lerr, cerr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			ls, lerr = ss[0].Lease(ctx, c0, []store.Grant{{TaskID: id, AgentID: "ag", ExpiresAt: c0.Add(time.Minute)}})
		}()
		go func() {
			defer wg.Done()
			_, cerr = ss[1].Update(ctx, store.Update{TaskID: id, From: []store.State{store.Queued}, To: store.Cancelled, Now: c0})
		}()
		wg.Wait()
		if lerr != nil || (cerr != nil && !errors.Is(cerr, store.ErrConflict)) {
			t.Fatalf("task %s: lease %v, cancel %v", id, lerr, cerr)
		}
		got, _ := ss[0].Get(ctx, id)
		switch {
		case len(ls) == 1 && cerr != nil && got.State == store.Leased:
			leased++
		case len(ls) == 0 && cerr == nil && got.State == store.Cancelled:
			cancelled++
		default:
			t.Fatalf("task %s: leased %d, cancel error %v, state %s: want exactly one of lease and cancel", id, len(ls), cerr, got.State)
		}
	}
	t.Logf("%d leased first, %d cancelled first", leased, cancelled)
}

// testLeaseRace: several servers, each with several dispatchers, read the same ready
// queue and lease from it at once: every task is leased exactly once.
func testLeaseRace(t *testing.T, ss []store.Store) {
	ctx := context.Background()
	const tasks, perServer = 300, 4
	for i := 0; i < tasks; i++ {
		create(t, ss[i%len(ss)], fmt.Sprintf("t%03d", i))
	}
	var mu sync.Mutex
	leasedBy := map[string]string{}
	var dup []string
	var wg sync.WaitGroup
	errs := make(chan error, len(ss)*perServer)
	for si, s := range ss {
		for d := 0; d < perServer; d++ {
			wg.Add(1)
			go func(s store.Store, agent string) {
				defer wg.Done()
				for {
					ready, err := s.Ready(ctx, "echo", c0, 8)
					if err != nil {
						errs <- err
						return
					}
					if len(ready) == 0 {
						return
					}
					var gs []store.Grant
					for _, tk := range ready {
						gs = append(gs, store.Grant{TaskID: tk.ID, AgentID: agent, ExpiresAt: c0.Add(time.Minute)})
					}
					ls, err := s.Lease(ctx, c0, gs)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, tk := range ls {
						if prev, ok := leasedBy[tk.ID]; ok {
							dup = append(dup, fmt.Sprintf("%s by %s and %s", tk.ID, prev, agent))
						}
						leasedBy[tk.ID] = agent
						if tk.AgentID != agent || tk.LeaseID != 1 || tk.Attempt != 1 {
							dup = append(dup, fmt.Sprintf("%s returned as %+v", tk.ID, tk))
						}
					}
					mu.Unlock()
				}
			}(s, fmt.Sprintf("s%d-d%d", si, d))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("dispatcher: %v", err)
	}
	if len(dup) > 0 {
		t.Fatalf("leased more than once: %v", dup)
	}
	if len(leasedBy) != tasks {
		t.Fatalf("%d tasks leased, want %d", len(leasedBy), tasks)
	}
	agents := map[string]int{}
	for _, a := range leasedBy {
		agents[a]++
	}
	t.Logf("leases per dispatcher: %v", agents)
	for id, agent := range leasedBy {
		got, err := ss[0].Get(ctx, id)
		if err != nil || got.State != store.Leased || got.AgentID != agent || got.LeaseID != 1 {
			t.Fatalf("task %s: %+v, %v; want leased once to %s", id, got, err, agent)
		}
		if att, _ := ss[0].Attempts(ctx, id); len(att) != 1 {
			t.Fatalf("task %s has %d attempts, want 1", id, len(att))
		}
	}
}

// testIdempotencyRace: concurrent submissions with one idempotency key create one task.
func testIdempotencyRace(t *testing.T, ss []store.Store) {
	ctx := context.Background()
	const racers = 16
	ids := make(chan string, racers)
	created := make(chan string, racers)
	var wg sync.WaitGroup
	for r := 0; r < racers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			tk := storetest.NewTask(fmt.Sprintf("t%d", r), "echo")
			tk.IdempotencyKey = "same"
			got, c, err := ss[r%len(ss)].Create(ctx, tk)
			if err != nil {
				t.Errorf("Create(t%d): %v", r, err)
				return
			}
			ids <- got.ID
			if c {
				created <- got.ID
			}
		}(r)
	}
	wg.Wait()
	close(ids)
	close(created)
	if len(created) != 1 {
		t.Fatalf("%d racers created a task with the same key, want 1", len(created))
	}
	winner := <-created
	for id := range ids {
		if id != winner {
			t.Fatalf("a racer got task %s back, want the created %s", id, winner)
		}
	}
	if n, _, _ := ss[0].List(ctx, store.Filter{}); len(n) != 1 {
		t.Fatalf("%d tasks stored, want 1", len(n))
	}
}

func testErrors(t *testing.T, ss []store.Store) {
	s := ss[0]
	ctx := context.Background()
	for _, bad := range []store.Task{
		{Type: "echo", Tenant: "default", MaxAttempts: 1},
		{ID: "x", Tenant: "default", MaxAttempts: 1},
		{ID: "x", Type: "echo", MaxAttempts: 1},
		{ID: "x", Type: "echo", Tenant: "default"},
	} {
		if _, c, err := s.Create(ctx, bad); !errors.Is(err, store.ErrInvalid) || c {
			t.Fatalf("Create(%+v) = created %v, %v; want ErrInvalid", bad, c, err)
		}
	}
	create(t, s, "a")
	dup := storetest.NewTask("a", "sleep")
	if _, c, err := s.Create(ctx, dup); err == nil || c {
		t.Fatalf("Create of an existing id = created %v, %v; want an error", c, err)
	}
	if got, _ := s.Get(ctx, "a"); got.Type != "echo" {
		t.Fatalf("a failed Create changed the task: %+v", got)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "a", To: store.Cancelled}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Update without From: %v, want ErrInvalid", err)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Queued}, To: "bogus"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Update to an unknown state: %v, want ErrInvalid", err)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "nope", From: []store.State{store.Queued}, To: store.Cancelled}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Update of a missing task: %v, want ErrNotFound", err)
	}
	l := lease1(t, s, "a", "ag")
	if l.LeaseSecret != "s-ag" {
		t.Fatalf("leased task's secret = %q, want the grant's", l.LeaseSecret)
	}
	cur, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased}, LeaseID: l.LeaseID + 1, To: store.Running, Now: c0, Started: true})
	if !errors.Is(err, store.ErrConflict) || cur.State != store.Leased || cur.LeaseID != l.LeaseID {
		t.Fatalf("Update under the wrong lease = %+v, %v; want ErrConflict and the task as it is", cur, err)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Queued}, To: store.Cancelled, Now: c0}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Update from the wrong state: %v, want ErrConflict", err)
	}
	if ls, err := s.Lease(ctx, c0, []store.Grant{{TaskID: "nope", AgentID: "ag", ExpiresAt: c0}}); err != nil || len(ls) != 0 {
		t.Fatalf("Lease of a missing task = %v, %v; want nothing, no error", ls, err)
	}
	if ls, err := s.Lease(ctx, c0, nil); err != nil || len(ls) != 0 {
		t.Fatalf("Lease of nothing = %v, %v", ls, err)
	}
	if n, err := s.Renew(ctx, "ag", nil, c0); err != nil || n != 0 {
		t.Fatalf("Renew of nothing = %d, %v", n, err)
	}
	if n, err := s.Renew(ctx, "ag", []store.LeaseRef{{TaskID: "nope", LeaseID: 1}}, c0); err != nil || n != 0 {
		t.Fatalf("Renew of a missing task = %d, %v", n, err)
	}
	if att, err := s.Attempts(ctx, "nope"); err != nil || len(att) != 0 {
		t.Fatalf("Attempts of a missing task = %v, %v; want none", att, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Get(cctx, "a"); err == nil {
		t.Fatalf("Get with a cancelled context succeeded")
	}
	// A write under a cancelled context may fail or apply, but not fail and apply.
	_, _, err = s.Create(cctx, storetest.NewTask("b", "echo"))
	if _, gerr := s.Get(ctx, "b"); (err == nil) != (gerr == nil) {
		t.Fatalf("Create with a cancelled context: %v; Get after it: %v; want both to fail or both to succeed", err, gerr)
	}
}

// testClosed: a closed store answers with errors, not panics, and Close is idempotent.
func testClosed(t *testing.T, ss []store.Store) {
	s := ss[0]
	ctx := context.Background()
	create(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a"); err == nil {
		t.Fatalf("Get on a closed store succeeded")
	}
	if _, _, err := s.Create(ctx, storetest.NewTask("b", "echo")); err == nil {
		t.Fatalf("Create on a closed store succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestConcurrencySQLite(t *testing.T) {
	Concurrency(t, func(t *testing.T, n int) []store.Store {
		path := filepath.Join(t.TempDir(), "paddock.db")
		var out []store.Store
		for i := 0; i < n; i++ {
			s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	})
}
