package store

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestTransition: the Update each event builds, from the states where it is legal.
func TestTransition(t *testing.T) {
	now := time.Unix(1000, 0)
	running := Task{ID: "t", State: Running, LeaseID: 7, Attempt: 1, MaxAttempts: 3}
	leased := running
	leased.State = Leased
	queued := Task{ID: "t", State: Queued, MaxAttempts: 3}
	waiting := Task{ID: "t", State: Waiting, MaxAttempts: 3}
	c := Change{Now: now, Error: "boom", FailureKind: HandlerError, Backoff: time.Second, Usage: Usage{Wall: time.Second}}
	for _, tc := range []struct {
		name string
		t    Task
		e    Event
		want Update
	}{
		{"ack", leased, EvStart, Update{TaskID: "t", From: []State{Leased}, LeaseID: 7, To: Running, Now: now, Started: true}},
		{"refuse requeues with backoff", leased, EvRefuse, Update{TaskID: "t", From: []State{Leased}, LeaseID: 7, To: Queued, Now: now,
			EndAttempt: true, Retryable: true, FailureKind: HandlerError, Usage: c.Usage, NotBefore: now.Add(time.Second)}},
		{"success clears the error", running, EvSucceed, Update{TaskID: "t", From: []State{Leased, Running}, LeaseID: 7, To: Succeeded, Now: now,
			EndAttempt: true, FailureKind: HandlerError, Usage: c.Usage}},
		{"retryable failure", running, EvFailRetryable, Update{TaskID: "t", From: []State{Leased, Running}, LeaseID: 7, To: Queued, Now: now,
			EndAttempt: true, Retryable: true, FailureKind: HandlerError, Usage: c.Usage, NotBefore: now.Add(time.Second)}},
		{"fatal failure", running, EvFailFatal, Update{TaskID: "t", From: []State{Leased, Running}, LeaseID: 7, To: Failed, Now: now,
			EndAttempt: true, FailureKind: HandlerError, Usage: c.Usage}},
		{"expiry", leased, EvExpire, Update{TaskID: "t", From: []State{Leased, Running}, LeaseID: 7, To: Queued, Now: now,
			EndAttempt: true, Retryable: true, FailureKind: HandlerError, Usage: c.Usage, NotBefore: now.Add(time.Second)}},
		{"preemption is not charged", running, EvPreempt, Update{TaskID: "t", From: []State{Leased, Running}, LeaseID: 7, To: Queued, Now: now,
			EndAttempt: true, Retryable: true, Preempted: true, FailureKind: HandlerError, Usage: c.Usage, NotBefore: now.Add(time.Second)}},
		{"cancel queued", queued, EvCancel, Update{TaskID: "t", From: []State{Waiting, Queued}, To: Cancelled, Now: now, CancelRequested: true}},
		{"cancel waiting", waiting, EvCancel, Update{TaskID: "t", From: []State{Waiting, Queued}, To: Cancelled, Now: now, CancelRequested: true}},
		{"cancel running waits for the agent", running, EvCancel, Update{TaskID: "t", From: []State{Running}, LeaseID: 7, To: Running, Now: now, CancelRequested: true}},
		{"cancelled", running, EvCancelled, Update{TaskID: "t", From: []State{Leased, Running}, LeaseID: 7, To: Cancelled, Now: now,
			EndAttempt: true, FailureKind: HandlerError, Usage: c.Usage}},
		{"schedule timeout", queued, EvScheduleTimeout, Update{TaskID: "t", From: []State{Queued}, To: Failed, Now: now, FailureKind: HandlerError}},
		{"upstream lost", waiting, EvUpstreamLost, Update{TaskID: "t", From: []State{Waiting}, To: Failed, Now: now, FailureKind: HandlerError}},
		{"upstreams done", waiting, EvUpstreamsDone, Update{TaskID: "t", From: []State{Waiting}, To: Queued, Now: now}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Transition(tc.t, tc.e, c)
			if err != nil {
				t.Fatal(err)
			}
			wantErr := "boom"
			if tc.e == EvSucceed {
				wantErr = ""
			}
			if got.Error == nil || *got.Error != wantErr {
				t.Fatalf("Error = %v; want %q", got.Error, wantErr)
			}
			got.Error = nil
			if !slices.Equal(got.From, tc.want.From) {
				t.Fatalf("From = %v; want %v", got.From, tc.want.From)
			}
			got.From, tc.want.From = nil, nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Update\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if _, err := Transition(queued, EvSucceed, c); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a success of a queued task: %v; want an illegal transition", err)
	}
}

// TestTransitionFromStatesAgreeWithNext: an update applies only in states from which
// Next sends the task where it sent it from the state it was read in.
func TestTransitionFromStatesAgreeWithNext(t *testing.T) {
	for _, st := range States {
		for _, e := range Events {
			tk := Task{State: st, Attempt: 1, MaxAttempts: 2, LeaseID: 1}
			u, err := Transition(tk, e, Change{})
			if err != nil {
				continue
			}
			if !slices.Contains(u.From, st) {
				t.Errorf("%s in %s: From %v leaves out the state it was read in", e, st, u.From)
			}
			for _, f := range u.From {
				tk2 := tk
				tk2.State = f
				if to, err := Next(tk2, e); err != nil || to != u.To {
					t.Errorf("%s read in %s goes to %s, but From %v holds %s, where it goes to %s (%v)", e, st, u.To, u.From, f, to, err)
				}
			}
		}
	}
}
