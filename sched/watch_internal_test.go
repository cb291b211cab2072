package sched

import (
	"testing"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// TestTaskWatchChange is the decision table of one watch: filters, changes older than
// the first list, and a task entering and leaving the state filter.
func TestTaskWatchChange(t *testing.T) {
	task := func(id, typ string, st paddockv1.State, at int64) *paddockv1.Task {
		return &paddockv1.Task{Id: id, State: st, UpdatedAtUnixMs: at, Spec: &paddockv1.TaskSpec{Type: typ, Tenant: "t1", Class: paddockv1.Class_CLASS_BATCH}}
	}
	const (
		queued  = paddockv1.State_STATE_QUEUED
		leased  = paddockv1.State_STATE_LEASED
		done    = paddockv1.State_STATE_SUCCEEDED
		dropped = 0 // not sent
		sent    = 1
		left    = 2
	)
	type step struct {
		t    *paddockv1.Task
		want int
	}
	for _, tc := range []struct {
		name  string
		req   *paddockv1.WatchTasksRequest
		first []*paddockv1.Task
		steps []step
	}{
		{name: "type filter", req: &paddockv1.WatchTasksRequest{Type: "a"},
			steps: []step{{task("1", "a", queued, 1), sent}, {task("2", "b", queued, 1), dropped}}},
		{name: "tenant and class filters", req: &paddockv1.WatchTasksRequest{Tenant: "t2", Class: paddockv1.Class_CLASS_ONLINE},
			steps: []step{{task("1", "a", queued, 1), dropped}}},
		{name: "a change older than the first list is skipped, the same age is not", req: &paddockv1.WatchTasksRequest{},
			first: []*paddockv1.Task{task("1", "a", leased, 5)},
			steps: []step{{task("1", "a", queued, 4), dropped}, {task("1", "a", leased, 5), sent}, {task("1", "a", done, 6), sent}}},
		{name: "once newer, older times no longer matter (the feed is in order)", req: &paddockv1.WatchTasksRequest{},
			first: []*paddockv1.Task{task("1", "a", leased, 5)},
			steps: []step{{task("1", "a", done, 7), sent}, {task("1", "a", queued, 3), sent}}},
		{name: "state filter: in, then out once", req: &paddockv1.WatchTasksRequest{State: queued},
			steps: []step{{task("1", "a", queued, 1), sent}, {task("1", "a", leased, 2), left}, {task("1", "a", done, 3), dropped}}},
		{name: "state filter: a listed task leaves", req: &paddockv1.WatchTasksRequest{State: queued},
			first: []*paddockv1.Task{task("1", "a", queued, 1)},
			steps: []step{{task("1", "a", leased, 2), left}}},
		{name: "state filter: a task never shown is not sent when it changes elsewhere", req: &paddockv1.WatchTasksRequest{State: queued},
			steps: []step{{task("1", "a", leased, 2), dropped}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newTaskWatch(tc.req, tc.first)
			for i, s := range tc.steps {
				out := w.change(s.t)
				got := dropped
				if out != nil {
					got = sent
					if out.GetLeft() {
						got = left
					}
					if out.GetTask() != s.t {
						t.Fatalf("step %d: sent %v, want the task itself", i, out.GetTask())
					}
				}
				if got != s.want {
					t.Fatalf("step %d (%s %s at %d): got %d, want %d (0 dropped, 1 sent, 2 left)", i, s.t.GetId(), s.t.GetState(), s.t.GetUpdatedAtUnixMs(), got, s.want)
				}
			}
		})
	}
}
