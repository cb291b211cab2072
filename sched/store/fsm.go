package store

import "fmt"

// Event is something that happens to a task.
type Event string

// The events.
const (
	EvLease           Event = "lease"            // the dispatcher assigned it to an agent
	EvStart           Event = "start"            // the agent acknowledged the assignment
	EvRefuse          Event = "refuse"           // the agent refused the assignment
	EvSucceed         Event = "succeed"          // the agent reported success
	EvFailFatal       Event = "fail_fatal"       // the agent reported a failure a retry cannot help
	EvFailRetryable   Event = "fail_retryable"   // the agent reported a failure a retry may help
	EvExpire          Event = "expire"           // the lease ran out (agent lost, task hung)
	EvCancel          Event = "cancel"           // a client asked to cancel it
	EvCancelled       Event = "cancelled"        // the agent reported it stopped the task after a cancel
	EvScheduleTimeout Event = "schedule_timeout" // no agent started it within its schedule-to-start timeout
	EvUpstreamsDone   Event = "upstreams_done"   // every upstream of a waiting task succeeded
	EvUpstreamLost    Event = "upstream_lost"    // an upstream of a waiting task ended failed, dead or cancelled (or is gone)
	EvPreempt         Event = "preempt"          // the server stopped it to give its slot to an online task (not charged)
)

// Events lists every event.
var Events = []Event{EvLease, EvStart, EvRefuse, EvSucceed, EvFailFatal, EvFailRetryable, EvExpire, EvCancel, EvCancelled, EvScheduleTimeout,
	EvUpstreamsDone, EvUpstreamLost, EvPreempt}

// retry is the pseudo-state of a transition that goes back to Queued while attempts
// remain and to Dead once they are used up (or Cancelled if a cancel was requested).
const retry State = "retry"

// transitions is the table of legal transitions: from state, on event, to state. An
// event missing from a state's row is illegal in that state. Terminal states have no
// row: nothing leaves them.
var transitions = map[State]map[Event]State{
	Waiting: {
		EvUpstreamsDone: Queued,
		EvUpstreamLost:  Failed,
		EvCancel:        Cancelled,
	},
	Queued: {
		EvLease:           Leased,
		EvCancel:          Cancelled,
		EvScheduleTimeout: Failed,
	},
	Leased: {
		EvStart:         Running,
		EvRefuse:        retry, // a refused lease counts as an attempt, so refusals cannot loop forever
		EvSucceed:       Succeeded,
		EvFailFatal:     Failed,
		EvFailRetryable: retry,
		EvExpire:        retry,
		EvCancel:        Leased, // the cancel is pushed to the agent; the state waits for it
		EvCancelled:     Cancelled,
		EvPreempt:       retry,
	},
	Running: {
		EvSucceed:       Succeeded,
		EvFailFatal:     Failed,
		EvFailRetryable: retry,
		EvExpire:        retry,
		EvCancel:        Running,
		EvCancelled:     Cancelled,
		EvPreempt:       retry,
	},
}

// IllegalError says that an event cannot happen in a state.
type IllegalError struct {
	From  State
	Event Event
}

func (e *IllegalError) Error() string {
	return fmt.Sprintf("illegal transition: event %q in state %q", e.Event, e.From)
}

// Unwrap makes an IllegalError match ErrInvalid.
func (e *IllegalError) Unwrap() error { return ErrInvalid }

// Next returns the state t goes to on event e, or an *IllegalError. It decides the
// retry outcome from t.Attempt and t.MaxAttempts: a retryable failure or an expired
// lease requeues the task while attempts remain, otherwise the task is dead; a task
// whose cancel was requested goes to Cancelled instead of being requeued. Attempts
// ended by a preemption (t.Preemptions) do not count against MaxAttempts.
func Next(t Task, e Event) (State, error) {
	to, ok := transitions[t.State][e]
	if !ok {
		return "", &IllegalError{From: t.State, Event: e}
	}
	if to != retry {
		return to, nil
	}
	if e == EvPreempt {
		t.Preemptions++ // the attempt it ends is not charged
	}
	switch {
	case t.CancelRequested:
		return Cancelled, nil
	case t.Attempt-t.Preemptions < t.MaxAttempts: // preempted attempts are not charged
		return Queued, nil
	default:
		return Dead, nil
	}
}

// Legal reports whether some event takes a task from one state to another.
func Legal(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to || (s == retry && (to == Queued || to == Dead || to == Cancelled)) {
			return true
		}
	}
	return false
}
