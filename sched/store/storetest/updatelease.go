package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// testUpdateLease: UpdateLease applies a preemption and the lease of the online task
// handed the slot in one change. The lease applies only with the update: a preemption
// under a superseded lease (a lost swap) is refused with ErrConflict and leases
// nothing; a grant of a task no longer queued is skipped while the update applies; a
// grant naming the updated task is refused and changes nothing.
func testUpdateLease(t *testing.T, s store.Store) {
	ctx := context.Background()
	b := NewTask("b", "echo")
	b.MaxAttempts = 1
	mustCreate(t, s, b)
	for _, id := range []string{"o1", "o2"} {
		o := NewTask(id, "echo")
		o.Class = store.Online
		mustCreate(t, s, o)
	}
	lb, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "b", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
	if err != nil || len(lb) != 1 {
		t.Fatalf("Lease(b) = %v, %v", lb, err)
	}
	preempt := func(lease uint64) store.Update {
		msg := "preempted"
		return store.Update{TaskID: "b", From: []store.State{store.Leased, store.Running}, LeaseID: lease, To: store.Queued,
			Now: t0, Error: &msg, EndAttempt: true, Retryable: true, FailureKind: store.Preempted, Preempted: true}
	}
	grant := func(id string) []store.Grant {
		return []store.Grant{{TaskID: id, AgentID: "ag", ExpiresAt: t0.Add(time.Minute), Secret: "s-" + id}}
	}

	// The preemption and the online task's lease, together.
	nb, leased, err := s.UpdateLease(ctx, preempt(lb[0].LeaseID), t0, grant("o1"))
	if err != nil {
		t.Fatalf("UpdateLease(preempt b, lease o1) = %v", err)
	}
	if nb.ID != "b" || nb.State != store.Queued || nb.Preemptions != 1 || nb.Attempt != 1 {
		t.Fatalf("UpdateLease returned b as %+v; want queued, attempt 1, 1 preemption", nb)
	}
	if len(leased) != 1 || leased[0].ID != "o1" || leased[0].State != store.Leased || leased[0].LeaseID == 0 ||
		leased[0].AgentID != "ag" || leased[0].Attempt != 1 || leased[0].LeaseSecret != "s-o1" || string(leased[0].Payload) != "p-o1" {
		t.Fatalf("UpdateLease leased %+v; want o1 leased to ag, attempt 1, with its payload and secret", leased)
	}
	if att, err := s.Attempts(ctx, "b"); err != nil || len(att) != 1 || att[0].FailureKind != store.Preempted || att[0].State != store.Queued {
		t.Fatalf("Attempts(b) = %+v, %v; want one attempt ended as preempted", att, err)
	}
	if att, err := s.Attempts(ctx, "o1"); err != nil || len(att) != 1 || att[0].State != store.Running || att[0].AgentID != "ag" {
		t.Fatalf("Attempts(o1) = %+v, %v; want one attempt on ag", att, err)
	}

	// A preemption under the superseded lease loses its swap: nothing is leased.
	nb, leased, err = s.UpdateLease(ctx, preempt(lb[0].LeaseID), t0, grant("o2"))
	if !errors.Is(err, store.ErrConflict) || len(leased) != 0 || nb.ID != "b" || nb.State != store.Queued {
		t.Fatalf("UpdateLease under a superseded lease = %+v, leased %v, %v; want ErrConflict with b as it is, nothing leased", nb, leased, err)
	}
	if o2, err := s.Get(ctx, "o2"); err != nil || o2.State != store.Queued || o2.LeaseID != 0 || o2.Attempt != 0 {
		t.Fatalf("o2 after a lost UpdateLease = %+v, %v; want still queued, never leased", o2, err)
	}

	// A grant of a task no longer queued is skipped; the update still applies.
	lb, err = s.Lease(ctx, t0, []store.Grant{{TaskID: "b", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
	if err != nil || len(lb) != 1 {
		t.Fatalf("Lease(b) again = %v, %v", lb, err)
	}
	o1, _ := s.Get(ctx, "o1")
	nb, leased, err = s.UpdateLease(ctx, preempt(lb[0].LeaseID), t0, grant("o1"))
	if err != nil || len(leased) != 0 || nb.State != store.Queued || nb.Preemptions != 2 {
		t.Fatalf("UpdateLease with a grant of a leased task = %+v, leased %v, %v; want b requeued (2 preemptions), nothing leased", nb, leased, err)
	}
	if again, _ := s.Get(ctx, "o1"); again.LeaseID != o1.LeaseID || again.State != store.Leased || again.Attempt != 1 {
		t.Fatalf("o1 after a skipped grant = %+v; want its lease %d unchanged", again, o1.LeaseID)
	}

	// A grant naming the updated task is refused; nothing changes.
	lb, err = s.Lease(ctx, t0, []store.Grant{{TaskID: "b", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
	if err != nil || len(lb) != 1 {
		t.Fatalf("Lease(b) a third time = %v, %v", lb, err)
	}
	if _, _, err := s.UpdateLease(ctx, preempt(lb[0].LeaseID), t0, grant("b")); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("UpdateLease leasing the task it updates: err = %v, want ErrInvalid", err)
	}
	if got, _ := s.Get(ctx, "b"); got.State != store.Leased || got.LeaseID != lb[0].LeaseID || got.Preemptions != 2 {
		t.Fatalf("b after a refused UpdateLease = %+v; want leased under lease %d, 2 preemptions", got, lb[0].LeaseID)
	}

	// No grants: an Update.
	nb, leased, err = s.UpdateLease(ctx, preempt(lb[0].LeaseID), t0, nil)
	if err != nil || len(leased) != 0 || nb.State != store.Queued || nb.Preemptions != 3 {
		t.Fatalf("UpdateLease without grants = %+v, leased %v, %v; want b requeued (3 preemptions)", nb, leased, err)
	}
}

// testCreateLease: CreateLease stores a task already leased, as Create then Lease
// would leave it (lease 1, attempt 1, its attempt recorded, payload and blobs kept); a
// taken idempotency key returns the task holding it and leases nothing; a grant of
// another task, or a task with upstreams, is refused and nothing is stored.
func testCreateLease(t *testing.T, s store.Store) {
	ctx := context.Background()
	in := NewTask("c", "echo")
	in.Class, in.IdempotencyKey = store.Online, "key-c"
	in.InputBlobs = map[string]store.BlobRef{"data": {Digest: "sha256:" + strings.Repeat("a", 64), Size: 3}}
	g := store.Grant{TaskID: "c", AgentID: "ag", ExpiresAt: t0.Add(time.Minute), Secret: "s-c"}
	got, created, err := s.CreateLease(ctx, in, t0, g)
	if err != nil || !created {
		t.Fatalf("CreateLease(c) = created %v, %v", created, err)
	}
	check := func(what string, tk store.Task) {
		t.Helper()
		if tk.ID != "c" || tk.State != store.Leased || tk.LeaseID != 1 || tk.Attempt != 1 || tk.AgentID != "ag" || tk.LeaseSecret != "s-c" ||
			!tk.LeaseExpiresAt.Equal(t0.Add(time.Minute)) || !tk.LeasedAt.Equal(t0) || !tk.CreatedAt.Equal(t0) || string(tk.Payload) != "p-c" ||
			tk.Class != store.Online || tk.InputBlobs["data"].Size != 3 || !tk.StartedAt.IsZero() {
			t.Fatalf("%s = %+v; want c leased to ag under lease 1, attempt 1, with its payload and input blob", what, tk)
		}
	}
	check("CreateLease", got)
	read, err := s.Get(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	check("Get after CreateLease", read)
	if att, err := s.Attempts(ctx, "c"); err != nil || len(att) != 1 || att[0].State != store.Running || att[0].AgentID != "ag" || att[0].LeaseID != 1 {
		t.Fatalf("Attempts(c) = %+v, %v; want one running attempt on ag under lease 1", att, err)
	}
	if used, err := s.BlobInUse(ctx, in.InputBlobs["data"].Digest, t0); err != nil || !used {
		t.Fatalf("BlobInUse(c's input) = %v, %v; want in use", used, err)
	}
	// The lease fences as any: a report under another lease loses.
	if _, err := s.Update(ctx, store.Update{TaskID: "c", From: []store.State{store.Leased}, LeaseID: 2, To: store.Succeeded, Now: t0}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Update under lease 2 of a task leased under 1: err = %v, want ErrConflict", err)
	}
	// The same key: the task holding it, nothing leased.
	dup := NewTask("d", "echo")
	dup.IdempotencyKey = "key-c"
	got, created, err = s.CreateLease(ctx, dup, t0, store.Grant{TaskID: "d", AgentID: "ag2", ExpiresAt: t0.Add(time.Minute)})
	if err != nil || created || got.ID != "c" || got.AgentID != "ag" {
		t.Fatalf("CreateLease with a taken key = %s (agent %s) created %v, %v; want task c as it was, not created", got.ID, got.AgentID, created, err)
	}
	if _, err := s.Get(ctx, "d"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(d) after a taken key: %v, want ErrNotFound", err)
	}
	// Refused: a grant of another task; a task with upstreams.
	if _, _, err := s.CreateLease(ctx, NewTask("e", "echo"), t0, store.Grant{TaskID: "x", AgentID: "ag"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CreateLease with a grant of another task: err = %v, want ErrInvalid", err)
	}
	w := NewTask("w", "echo")
	w.Upstreams = map[string]store.Upstream{"in": {TaskID: "c"}}
	if _, _, err := s.CreateLease(ctx, w, t0, store.Grant{TaskID: "w", AgentID: "ag"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CreateLease of a task with upstreams: err = %v, want ErrInvalid", err)
	}
	for _, id := range []string{"e", "w"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get(%s) after a refused CreateLease: %v, want ErrNotFound", id, err)
		}
	}
	// A plain one, without key or blobs, next to a queued task.
	mustCreate(t, s, NewTask("q", "echo"))
	got, created, err = s.CreateLease(ctx, NewTask("f", "echo"), t0, store.Grant{TaskID: "f", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)})
	if err != nil || !created || got.State != store.Leased || got.LeaseID != 1 {
		t.Fatalf("CreateLease(f) = %+v created %v, %v", got, created, err)
	}
	if ready, err := s.Ready(ctx, "echo", t0, 10); err != nil || len(ready) != 1 || ready[0].ID != "q" {
		t.Fatalf("Ready = %v, %v; want only q (the tasks created leased are not queued)", ready, err)
	}
}

// testUpdateLeaseRace: racing UpdateLease calls preempting the same lease, each handing
// the slot to another online task: exactly one applies, and only its grant is leased.
func testUpdateLeaseRace(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("b", "echo"))
	const n = 8
	for i := range n {
		o := NewTask(fmt.Sprintf("o%d", i), "echo")
		o.Class = store.Online
		mustCreate(t, s, o)
	}
	lb, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "b", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
	if err != nil || len(lb) != 1 {
		t.Fatalf("Lease(b) = %v, %v", lb, err)
	}
	msg := "preempted"
	u := store.Update{TaskID: "b", From: []store.State{store.Leased, store.Running}, LeaseID: lb[0].LeaseID, To: store.Queued,
		Now: t0, Error: &msg, EndAttempt: true, Retryable: true, FailureKind: store.Preempted, Preempted: true}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, lost := 0, 0
	var leased []string
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ls, err := s.UpdateLease(ctx, u, t0, []store.Grant{{TaskID: fmt.Sprintf("o%d", i), AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
				for _, l := range ls {
					leased = append(leased, l.ID)
				}
			case errors.Is(err, store.ErrConflict):
				lost++
				if len(ls) != 0 {
					t.Errorf("a lost UpdateLease leased %v", ls)
				}
			default:
				t.Errorf("UpdateLease: %v", err)
			}
		}()
	}
	wg.Wait()
	if won != 1 || lost != n-1 || len(leased) != 1 {
		t.Fatalf("%d racing UpdateLease of one lease: %d applied, %d lost, leased %v; want 1 applied (leasing its one grant), %d lost", n, won, lost, leased, n-1)
	}
	ready, err := s.Ready(ctx, "echo", t0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(ready) != n { // b requeued, and the n-1 online tasks not leased
		t.Fatalf("Ready after the race = %d tasks, want %d (b and the %d online tasks not handed the slot)", len(ready), n, n-1)
	}
	if b, _ := s.Get(ctx, "b"); b.Preemptions != 1 || b.State != store.Queued {
		t.Fatalf("b after the race = %+v; want queued with 1 preemption", b)
	}
}
