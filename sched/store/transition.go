package store

import (
	"fmt"
	"time"
)

// Change is what an event carries besides the event itself: when it happened, and
// what the attempt it ends (if it ends one) records.
type Change struct {
	Now time.Time
	// Error is the task's error after the change ("" keeps the one it has; a success
	// always clears it).
	Error       string
	FailureKind FailureKind
	Usage       Usage
	// Backoff delays a requeued task (NotBefore = Now + Backoff).
	Backoff time.Duration
}

// Transition is the one home of a task's state changes: it returns the Update that
// applies event e to t (as read from the store) with c, or the *IllegalError of Next.
// Every change the scheduler makes — a lease's ack or refusal, a report, an expiry, a
// lost guest, a preemption, a cancel, a schedule-to-start timeout, a pipeline stage's
// upstreams resolved — is built here, so what each event does is read in one place:
//
//   - the new state is Next's (the transitions table, with the retry rule);
//   - the update applies only while the task is still in a state where e leads where
//     it led from t's (Update.From), and, for a leased task, only under the lease t
//     held (Update.LeaseID: fencing against a late report or a second replica);
//   - the events that end an attempt (refuse, succeed, fail, expire, preempt, cancelled)
//     record its outcome (EndAttempt), retryable when the event goes through the retry
//     rule (a refusal, a retryable failure, an expiry, a preemption); a preemption is
//     counted so the attempt is not charged;
//   - a task requeued from a lease waits c.Backoff; a success clears the task's error;
//     a start stamps StartedAt; a cancel sets the cancel flag.
//
// The caller adds what only it knows (a success's outputs, a resolved stage's input
// blobs) to the Update before it writes it.
func Transition(t Task, e Event, c Change) (Update, error) {
	to, err := Next(t, e)
	if err != nil {
		return Update{}, err
	}
	u := Update{TaskID: t.ID, To: to, Now: c.Now, From: fromStates(t.State, e)}
	if t.State == Leased || t.State == Running {
		u.LeaseID = t.LeaseID
	}
	switch e {
	case EvStart:
		u.Started = true
	case EvCancel:
		u.CancelRequested = true
	case EvScheduleTimeout, EvUpstreamLost: // failures without an attempt: the task's own kind
		u.FailureKind = c.FailureKind
	case EvRefuse, EvSucceed, EvFailFatal, EvFailRetryable, EvExpire, EvPreempt, EvCancelled:
		u.EndAttempt, u.FailureKind, u.Usage = true, c.FailureKind, c.Usage
		u.Retryable = transitions[t.State][e] == retry
		u.Preempted = e == EvPreempt
		if to == Queued && c.Backoff > 0 {
			u.NotBefore = c.Now.Add(c.Backoff)
		}
	}
	switch {
	case e == EvSucceed:
		none := ""
		u.Error = &none
	case c.Error != "":
		msg := c.Error
		u.Error = &msg
	}
	return u, nil
}

// fromStates is the states in which event e leads where it leads from state from: the
// update applies in any of them, and in no other (Update.From).
func fromStates(from State, e Event) []State {
	want := transitions[from][e]
	var out []State
	for _, st := range States {
		if to, ok := transitions[st][e]; ok && to == want {
			out = append(out, st)
		}
	}
	return out
}

// CheckCreateLease checks the arguments of Store.CreateLease: g must lease t, and t
// must be created Queued (not Waiting on upstreams).
func CheckCreateLease(t Task, g Grant) error {
	switch {
	case g.TaskID != t.ID:
		return fmt.Errorf("creating task %s and leasing it: the grant names task %q: %w", t.ID, g.TaskID, ErrInvalid)
	case InitialState(t) != Queued:
		return fmt.Errorf("creating task %s and leasing it: a task with upstreams is created waiting, not queued: %w", t.ID, ErrInvalid)
	}
	return nil
}
