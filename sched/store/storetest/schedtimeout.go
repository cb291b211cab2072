package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// testScheduleExpired: a task's ScheduleDeadline is stored and read back; ScheduleExpired
// returns the queued, never started tasks whose deadline passed (soonest first), not
// those without one, not those whose deadline is ahead, and not one that was leased.
func testScheduleExpired(t *testing.T, s store.Store) {
	ctx := context.Background()
	mk := func(id string, after time.Duration) {
		tk := NewTask(id, "st")
		if after > 0 {
			tk.ScheduleDeadline = t0.Add(after)
		}
		mustCreate(t, s, tk)
	}
	mk("st-none", 0)
	mk("st-2s", 2*time.Second)
	mk("st-1s", time.Second)
	mk("st-1h", time.Hour)
	mk("st-leased", time.Second)
	if got, err := s.Get(ctx, "st-2s"); err != nil || !got.ScheduleDeadline.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("Get(st-2s).ScheduleDeadline = %v, %v; want %v", got.ScheduleDeadline, err, t0.Add(2*time.Second))
	}
	if got, err := s.Get(ctx, "st-none"); err != nil || !got.ScheduleDeadline.IsZero() {
		t.Fatalf("Get(st-none).ScheduleDeadline = %v, %v; want zero", got.ScheduleDeadline, err)
	}
	if _, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "st-leased", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.ScheduleExpired(ctx, t0.Add(3*time.Second), 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tk := range got {
		ids = append(ids, tk.ID)
	}
	if len(ids) != 2 || ids[0] != "st-1s" || ids[1] != "st-2s" {
		t.Fatalf("ScheduleExpired = %v; want [st-1s st-2s]", ids)
	}
	if got, err := s.ScheduleExpired(ctx, t0.Add(3*time.Second), 1); err != nil || len(got) != 1 {
		t.Errorf("ScheduleExpired(limit 1) = %d tasks, %v", len(got), err)
	}
}
