package sched_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched"
)

// TestSubmitBatch: a batch is stored in order and every task runs; idempotency keys
// hold inside a batch and across batches; a bad spec fails the whole batch, naming it.
func TestSubmitBatch(t *testing.T) {
	ts := startServer(t, rawAgentConfig())
	ctx := context.Background()
	startAgent(t, ts, "a1", &fakeExec{types: []session.TaskType{{Name: "echo", Concurrency: 4}}, fn: echo})

	specs := []*paddockv1.TaskSpec{
		{Type: "echo", Payload: []byte("0")},
		{Type: "echo", Payload: []byte("1"), IdempotencyKey: "same"},
		{Type: "echo", Payload: []byte("2"), IdempotencyKey: "same"},
		{Type: "echo", Payload: []byte("3")},
	}
	r, err := ts.tasks.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: specs}))
	if err != nil {
		t.Fatal(err)
	}
	res := r.Msg.GetResults()
	if len(res) != 4 {
		t.Fatalf("%d results for 4 specs", len(res))
	}
	if !res[0].GetCreated() || !res[1].GetCreated() || res[2].GetCreated() || res[2].GetTask().GetId() != res[1].GetTask().GetId() {
		t.Fatalf("created flags %v %v %v; want the third to be the second's task (same idempotency key)", res[0].GetCreated(), res[1].GetCreated(), res[2].GetCreated())
	}
	for i, want := range []string{"0", "1", "1", "3"} {
		got := wait(t, ts, res[i].GetTask().GetId(), time.Minute)
		if got.GetState() != paddockv1.State_STATE_SUCCEEDED || string(got.GetOutput()) != want {
			t.Errorf("task %d: %v output %q; want succeeded with %q", i, got.GetState(), got.GetOutput(), want)
		}
	}
	// Three attempts ended in success (the fourth spec was the second's task).
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `paddock_attempts_total{failure_kind="",state="succeeded"} 3`; !strings.Contains(string(b), want) {
		t.Errorf("/metrics lacks %s", want)
	}
	again, err := ts.tasks.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: specs[1:2]}))
	if err != nil || again.Msg.GetResults()[0].GetCreated() || again.Msg.GetResults()[0].GetTask().GetId() != res[1].GetTask().GetId() {
		t.Fatalf("resubmitting a key in a new batch: %v, %v; want the stored task", again, err)
	}

	list := func() int {
		l, err := ts.tasks.List(ctx, connect.NewRequest(&paddockv1.ListRequest{Limit: 1000}))
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Msg.GetTasks())
	}
	before := list()
	for _, tc := range []struct {
		specs []*paddockv1.TaskSpec
		want  string
	}{
		{[]*paddockv1.TaskSpec{{Type: "echo"}, {Type: ""}}, "tasks[1].type"},
		{[]*paddockv1.TaskSpec{{Type: "echo"}, {Type: "echo", TimeoutMs: -1}}, "tasks[1]"},
		{[]*paddockv1.TaskSpec{{Type: "echo"}, nil}, "tasks[1]"},
		{nil, "tasks: empty"},
		{make([]*paddockv1.TaskSpec, sched.MaxBatchTasks+1), "over the limit"},
	} {
		_, err := ts.tasks.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: tc.specs}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("batch %d specs: %v; want invalid argument naming %q", len(tc.specs), err, tc.want)
		}
	}
	if after := list(); after != before {
		t.Errorf("refused batches stored %d tasks", after-before)
	}
}
