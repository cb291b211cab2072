package storetest

import (
	"context"
	"errors"
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
