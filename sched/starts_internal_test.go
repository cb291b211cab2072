package sched

import (
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// TestReportedStart: which start a report's final write records.
func TestReportedStart(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	leased, pending, now := t0, t0.Add(5*time.Millisecond), t0.Add(2*time.Second)
	for _, tc := range []struct {
		name      string
		held      bool          // this server holds the assignment
		pending   time.Time     // its start not yet written
		storedAt  time.Time     // the task's start as the store has it
		wall      time.Duration // the attempt's wall time as the agent reports it
		want      time.Time
		wantWrite bool
	}{
		{name: "held, start pending: the ack's time", held: true, pending: pending, wall: time.Second, want: pending, wantWrite: true},
		{name: "held, start written: nothing", held: true, wall: time.Second},
		{name: "unknown, start in the store: nothing", storedAt: pending, wall: time.Second},
		{name: "unknown, no start stored: end less wall time", wall: time.Second, want: now.Add(-time.Second), wantWrite: true},
		{name: "unknown, wall longer than the lease: the lease", wall: time.Hour, want: leased, wantWrite: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{agents: newAgentRegistry(), starts: &startQueue{}}
			a := &agent{id: "a1", running: map[string]*assignment{}}
			s.agents.byID[a.id] = a
			if tc.held {
				a.running["t1"] = &assignment{taskID: "t1", leaseID: 7, startedAt: tc.pending}
			}
			task := store.Task{ID: "t1", LeaseID: 7, LeasedAt: leased, StartedAt: tc.storedAt}
			got := s.reportedStart("a1", task, now, tc.wall)
			if !got.Equal(tc.want) || got.IsZero() == tc.wantWrite {
				t.Fatalf("reportedStart = %v, want %v", got, tc.want)
			}
		})
	}
}
