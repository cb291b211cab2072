package store

import (
	"testing"

	"pgregory.net/rapid"
)

func TestNextTable(t *testing.T) {
	tests := []struct {
		name    string
		task    Task
		ev      Event
		want    State
		wantErr bool
	}{
		{"lease", Task{State: Queued}, EvLease, Leased, false},
		{"upstreams done", Task{State: Waiting}, EvUpstreamsDone, Queued, false},
		{"upstream lost", Task{State: Waiting}, EvUpstreamLost, Failed, false},
		{"cancel waiting", Task{State: Waiting}, EvCancel, Cancelled, false},
		{"lease waiting is illegal", Task{State: Waiting}, EvLease, "", true},
		{"upstreams done when queued is illegal", Task{State: Queued}, EvUpstreamsDone, "", true},
		{"cancel queued", Task{State: Queued}, EvCancel, Cancelled, false},
		{"succeed queued is illegal", Task{State: Queued}, EvSucceed, "", true},
		{"start", Task{State: Leased}, EvStart, Running, false},
		{"retry with attempts left", Task{State: Running, Attempt: 1, MaxAttempts: 3}, EvFailRetryable, Queued, false},
		{"retry out of attempts", Task{State: Running, Attempt: 3, MaxAttempts: 3}, EvFailRetryable, Dead, false},
		{"expire out of attempts", Task{State: Leased, Attempt: 2, MaxAttempts: 2}, EvExpire, Dead, false},
		{"expire with cancel requested", Task{State: Running, Attempt: 1, MaxAttempts: 3, CancelRequested: true}, EvExpire, Cancelled, false},
		{"fatal", Task{State: Running}, EvFailFatal, Failed, false},
		{"cancel running waits for agent", Task{State: Running}, EvCancel, Running, false},
		{"cancelled", Task{State: Running}, EvCancelled, Cancelled, false},
		{"start twice is illegal", Task{State: Running}, EvStart, "", true},
		{"succeeded is final", Task{State: Succeeded}, EvSucceed, "", true},
		{"dead is final", Task{State: Dead}, EvLease, "", true},
		{"preempt requeues", Task{State: Running, Attempt: 1, MaxAttempts: 1}, EvPreempt, Queued, false},
		{"preempt on the last attempt still requeues", Task{State: Leased, Attempt: 3, Preemptions: 1, MaxAttempts: 2}, EvPreempt, Queued, false},
		{"preempt with cancel requested", Task{State: Running, Attempt: 1, MaxAttempts: 3, CancelRequested: true}, EvPreempt, Cancelled, false},
		{"preempt queued is illegal", Task{State: Queued}, EvPreempt, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Next(tc.task, tc.ev)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Next = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestStateMachineProperties drives a task through random event sequences, applying
// each event the way the scheduler does (Next, then the side effects of leasing), and
// checks that it never reaches an illegal state: every step is Legal, a terminal state
// never changes, attempts never exceed max_attempts, and it succeeds at most once.
func TestStateMachineProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tk := Task{State: rapid.SampledFrom([]State{Waiting, Queued}).Draw(t, "start"), MaxAttempts: rapid.IntRange(1, 5).Draw(t, "max_attempts")}
		succeeded := 0
		steps := rapid.IntRange(0, 60).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			ev := rapid.SampledFrom(Events).Draw(t, "event")
			to, err := Next(tk, ev)
			if err != nil {
				if _, ok := transitions[tk.State][ev]; ok {
					t.Fatalf("Next refused legal event %s in %s: %v", ev, tk.State, err)
				}
				continue
			}
			if tk.State.Terminal() {
				t.Fatalf("terminal state %s changed to %s on %s", tk.State, to, ev)
			}
			if !to.Valid() {
				t.Fatalf("event %s took %s to invalid state %q", ev, tk.State, to)
			}
			if to != tk.State && !Legal(tk.State, to) {
				t.Fatalf("event %s took %s to %s, which Legal refuses", ev, tk.State, to)
			}
			switch ev {
			case EvLease:
				tk.Attempt++
				tk.LeaseID++
			case EvCancel:
				tk.CancelRequested = true
			case EvPreempt:
				tk.Preemptions++
			}
			if to == Succeeded {
				succeeded++
			}
			if to == Dead && tk.Attempt-tk.Preemptions < tk.MaxAttempts {
				t.Fatalf("dead after %d of %d attempts", tk.Attempt, tk.MaxAttempts)
			}
			if to == Queued && tk.CancelRequested {
				t.Fatalf("a task whose cancel was requested went back to the queue on %s", ev)
			}
			tk.State = to
			if tk.Attempt-tk.Preemptions > tk.MaxAttempts {
				t.Fatalf("attempt %d (%d preempted, not charged) exceeds max_attempts %d", tk.Attempt, tk.Preemptions, tk.MaxAttempts)
			}
		}
		if succeeded > 1 {
			t.Fatalf("succeeded %d times", succeeded)
		}
	})
}
