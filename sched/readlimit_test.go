package sched_test

import (
	"context"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// TestUnplaceableTasksDoNotHideOthers: a dispatch round reads only as many ready tasks
// as there are free slots while every task it reads can be placed; ready tasks that no
// agent can take (requirements) at the head of the queue must not hide a placeable one
// behind them, whatever the number of free slots.
func TestUnplaceableTasksDoNotHideOthers(t *testing.T) {
	ts := startServer(t, fastConfig())
	ex := &fakeExec{types: []session.TaskType{{Name: "rl.work"}}, fn: func(context.Context, session.Task) session.Result {
		return session.Result{Output: []byte("done")}
	}}
	startAgentWith(t, ts, "rl-1", session.Capacity{CPUMillis: 1000, Labels: map[string]string{"zone": "a"}}, map[string]int{"rl.work": 1}, ex)
	waitAgents(t, ts, 1)
	// A plain task first, so that the type's rounds start reading one task for the
	// one slot, then 20 tasks nobody can take (zone b), then a plain one.
	wait(t, ts, submit(t, ts, &paddockv1.TaskSpec{Type: "rl.work"}).GetId(), time.Minute)
	for range 20 {
		submit(t, ts, &paddockv1.TaskSpec{Type: "rl.work", Requirements: &paddockv1.Requirements{Labels: map[string]string{"zone": "b"}}})
	}
	last := submit(t, ts, &paddockv1.TaskSpec{Type: "rl.work"}).GetId()
	if got := wait(t, ts, last, time.Minute); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("the placeable task behind 20 unplaceable ones: %v", got.GetState())
	}
}
