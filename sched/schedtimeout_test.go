package sched_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched"
)

// TestScheduleToStartTimeout: a task of a type nothing serves, with a 2 s
// schedule-to-start timeout, ends FAILED with kind SCHEDULE_TIMEOUT, no attempt, and
// Explain's reason in its error; a served task with the same timeout that starts in
// time runs to success though it runs longer than the timeout; the server default
// applies to a task that gives none; bad values are refused naming the field or key.
func TestScheduleToStartTimeout(t *testing.T) {
	cfg := fastConfig()
	cfg.ScheduleToStartTimeout = time.Hour // the default; the tasks below give their own
	ts := startServer(t, cfg)
	ex := &fakeExec{types: []session.TaskType{{Name: "st.served", Version: "1"}}, fn: func(ctx context.Context, tk session.Task) session.Result {
		select {
		case <-time.After(3 * time.Second):
		case <-ctx.Done():
		}
		return session.Result{Output: []byte("ran")}
	}}
	startAgent(t, ts, "st-agent", ex)
	waitAgents(t, ts, 1)

	unserved := submit(t, ts, &paddockv1.TaskSpec{Type: "st.nobody", ScheduleToStartTimeoutMs: 2000})
	served := submit(t, ts, &paddockv1.TaskSpec{Type: "st.served", ScheduleToStartTimeoutMs: 2000})
	byDefault := submit(t, ts, &paddockv1.TaskSpec{Type: "st.nobody"})

	got := wait(t, ts, unserved.GetId(), 2*time.Minute)
	want := "no agent started it within 2s: no connected agent and no host pool serves type st.nobody"
	if got.GetState() != paddockv1.State_STATE_FAILED || got.GetFailureKind() != paddockv1.FailureKind_FAILURE_KIND_SCHEDULE_TIMEOUT ||
		!strings.HasPrefix(got.GetError(), want) || len(got.GetAttempts()) != 0 {
		t.Errorf("unserved task: %v, kind %v, %d attempts, error %q; want FAILED, SCHEDULE_TIMEOUT, no attempt, error starting %q",
			got.GetState(), got.GetFailureKind(), len(got.GetAttempts()), got.GetError(), want)
	}
	if ms := got.GetSpec().GetScheduleToStartTimeoutMs(); ms != 2000 {
		t.Errorf("spec.schedule_to_start_timeout_ms = %d; want 2000", ms)
	}
	if got := wait(t, ts, served.GetId(), 2*time.Minute); got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Errorf("served task: %v %q; want SUCCEEDED (it started within its schedule-to-start timeout)", got.GetState(), got.GetError())
	}
	g, err := ts.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: byDefault.GetId()}))
	if err != nil || g.Msg.GetTask().GetState() != paddockv1.State_STATE_QUEUED || g.Msg.GetTask().GetSpec().GetScheduleToStartTimeoutMs() != time.Hour.Milliseconds() {
		t.Errorf("task without its own timeout: %v, %v; want QUEUED with the server default of 1h", g.Msg.GetTask(), err)
	}

	for _, ms := range []int64{-1, (8 * 24 * time.Hour).Milliseconds()} {
		_, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "st.served", ScheduleToStartTimeoutMs: ms}}))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "task.schedule_to_start_timeout_ms") {
			t.Errorf("submit with schedule_to_start_timeout_ms %d: %v; want invalid_argument naming the field", ms, err)
		}
	}
	bad := fastConfig()
	bad.ScheduleToStartTimeout = -time.Second
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "server.schedule_to_start_timeout") {
		t.Errorf("Validate with a negative schedule-to-start timeout: %v; want an error naming server.schedule_to_start_timeout", err)
	}
	if _, err := sched.New(bad, nil); err == nil {
		t.Error("New accepted a negative schedule-to-start timeout")
	}
}
