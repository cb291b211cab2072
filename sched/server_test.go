package sched_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

func TestSubmitRunsOnAgent(t *testing.T) {
	ts := startServer(t, fastConfig())
	ex := &fakeExec{types: []session.TaskType{{Name: "echo", Version: "1"}}, fn: echo}
	startAgent(t, ts, "a1", ex)
	startAgent(t, ts, "a2", ex)
	var ids []string
	for i := 0; i < 200; i++ {
		ids = append(ids, submit(t, ts, &paddockv1.TaskSpec{Type: "echo", Payload: []byte(fmt.Sprint(i))}).GetId())
	}
	for i, id := range ids {
		tk := wait(t, ts, id, 20*time.Second)
		if tk.GetState() != paddockv1.State_STATE_SUCCEEDED || string(tk.GetOutput()) != fmt.Sprint(i) || len(tk.GetAttempts()) != 1 {
			t.Fatalf("task %d = %v", i, tk)
		}
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	for id, n := range ex.runs {
		if n != 1 {
			t.Errorf("task %s ran %d times", id, n)
		}
	}
	ag, err := ts.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	if err != nil || len(ag.Msg.GetAgents()) != 2 {
		t.Fatalf("ListAgents = %v, %v", ag, err)
	}
}

// TestSuccessAfterRetryClearsTheError: a task that fails once and then succeeds carries
// no task-level error; the failed attempt keeps its error in the history.
func TestSuccessAfterRetryClearsTheError(t *testing.T) {
	ts := startServer(t, fastConfig())
	ex := &fakeExec{types: []session.TaskType{{Name: "once", Version: "1"}}, fn: func(_ context.Context, t session.Task) session.Result {
		if t.Attempt == 1 {
			return session.Result{Error: "first attempt fails", Retryable: true}
		}
		return session.Result{Output: []byte("ok")}
	}}
	startAgent(t, ts, "a1", ex)
	tk := wait(t, ts, submit(t, ts, &paddockv1.TaskSpec{Type: "once", MaxAttempts: 3}).GetId(), 20*time.Second)
	if tk.GetState() != paddockv1.State_STATE_SUCCEEDED || tk.GetError() != "" || len(tk.GetAttempts()) != 2 {
		t.Fatalf("task = %v, want SUCCEEDED with no error after 2 attempts", tk)
	}
	if a := tk.GetAttempts()[0]; a.GetError() != "first attempt fails" || !a.GetRetryable() {
		t.Errorf("attempt 1 = %v, want its error kept", a)
	}
}

func TestRetryableFailuresEndDeadWithEveryError(t *testing.T) {
	ts := startServer(t, fastConfig())
	var n atomic.Int32
	ex := &fakeExec{types: []session.TaskType{{Name: "flaky", Version: "1"}}, fn: func(_ context.Context, t session.Task) session.Result {
		return session.Result{Error: fmt.Sprintf("transient #%d (attempt %d)", n.Add(1), t.Attempt), Retryable: true}
	}}
	startAgent(t, ts, "a1", ex)
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "flaky", MaxAttempts: 3}).GetId()
	tk := wait(t, ts, id, 20*time.Second)
	if tk.GetState() != paddockv1.State_STATE_DEAD || len(tk.GetAttempts()) != 3 {
		t.Fatalf("task = %v, want DEAD after 3 attempts", tk)
	}
	for i, a := range tk.GetAttempts() {
		if !strings.Contains(a.GetError(), fmt.Sprintf("attempt %d", i+1)) || !a.GetRetryable() {
			t.Errorf("attempt %d error %q", i+1, a.GetError())
		}
	}
	// A fatal failure does not retry.
	ex2 := &fakeExec{types: []session.TaskType{{Name: "bad", Version: "1"}}, fn: func(context.Context, session.Task) session.Result {
		return session.Result{Error: "bad input"}
	}}
	startAgent(t, ts, "a2", ex2)
	tk = wait(t, ts, submit(t, ts, &paddockv1.TaskSpec{Type: "bad", MaxAttempts: 5}).GetId(), 20*time.Second)
	if tk.GetState() != paddockv1.State_STATE_FAILED || len(tk.GetAttempts()) != 1 || tk.GetError() != "bad input" {
		t.Fatalf("fatal task = %v", tk)
	}
}

func TestCancelReachesHandlerContext(t *testing.T) {
	ts := startServer(t, fastConfig())
	started := make(chan struct{}, 1)
	sawCancel := make(chan struct{}, 1)
	ex := &fakeExec{types: []session.TaskType{{Name: "block", Version: "1"}}, fn: func(ctx context.Context, _ session.Task) session.Result {
		started <- struct{}{}
		<-ctx.Done()
		sawCancel <- struct{}{}
		return session.Result{Error: "stopped: " + ctx.Err().Error(), Retryable: true}
	}}
	startAgent(t, ts, "a1", ex)
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "block"}).GetId()
	<-started
	if _, err := ts.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sawCancel:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}
	tk := wait(t, ts, id, 10*time.Second)
	if tk.GetState() != paddockv1.State_STATE_CANCELLED {
		t.Fatalf("task = %v, want CANCELLED", tk)
	}
	// A queued task (no agent serves its type) is cancelled at once.
	q := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody"})
	r, err := ts.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: q.GetId()}))
	if err != nil || r.Msg.GetTask().GetState() != paddockv1.State_STATE_CANCELLED {
		t.Fatalf("cancel queued = %v, %v", r, err)
	}
}

func TestIdempotentSubmit(t *testing.T) {
	ts := startServer(t, fastConfig())
	a := submit(t, ts, &paddockv1.TaskSpec{Type: "x", IdempotencyKey: "order-42"})
	r, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "x", IdempotencyKey: "order-42"}}))
	if err != nil || r.Msg.GetCreated() || r.Msg.GetTask().GetId() != a.GetId() {
		t.Fatalf("second submit = %v, %v; want the same task %s, created=false", r, err, a.GetId())
	}
}

func TestPriorityThenFIFO(t *testing.T) {
	ts := startServer(t, fastConfig())
	var order []string
	orderc := make(chan string, 100)
	ex := &fakeExec{types: []session.TaskType{{Name: "p", Version: "1", Concurrency: 1}}, fn: func(_ context.Context, t session.Task) session.Result {
		orderc <- string(t.Payload)
		return session.Result{Output: t.Payload}
	}}
	var ids []string
	for i, p := range []int32{0, 5, 0, 5, -3, 9} {
		ids = append(ids, submit(t, ts, &paddockv1.TaskSpec{Type: "p", Priority: p, Payload: []byte(fmt.Sprintf("%d:%d", i, p))}).GetId())
	}
	startAgent(t, ts, "a1", ex) // one slot: dispatch order is run order
	for _, id := range ids {
		wait(t, ts, id, 10*time.Second)
	}
	close(orderc)
	for s := range orderc {
		order = append(order, s)
	}
	if got := strings.Join(order, " "); got != "5:9 1:5 3:5 0:0 2:0 4:-3" {
		t.Fatalf("run order %q, want priority first then FIFO", got)
	}
}

func TestBadInputNamesTheField(t *testing.T) {
	cfg := fastConfig()
	cfg.Dev, cfg.Token, cfg.AgentToken, cfg.MaxInlineBytes = false, "s3cret", "agent-s3cret", 1024
	ts := startServer(t, cfg)
	tests := []struct {
		name  string
		spec  *paddockv1.TaskSpec
		field string
	}{
		{"missing type", &paddockv1.TaskSpec{}, "task.type"},
		{"payload over limit", &paddockv1.TaskSpec{Type: "x", Payload: make([]byte, 2000)}, "task.payload"},
		{"negative timeout", &paddockv1.TaskSpec{Type: "x", TimeoutMs: -5}, "task.timeout_ms"},
		{"priority out of range", &paddockv1.TaskSpec{Type: "x", Priority: 101}, "task.priority"},
		{"malformed idempotency key", &paddockv1.TaskSpec{Type: "x", IdempotencyKey: "has space/and slash"}, "task.idempotency_key"},
		{"max attempts", &paddockv1.TaskSpec{Type: "x", MaxAttempts: -1}, "task.max_attempts"},
		{"inline input name climbs out", &paddockv1.TaskSpec{Type: "x", Inputs: map[string][]byte{"../../etc/passwd": []byte("hi")}}, "task.inputs"},
		{"inline input name with a slash", &paddockv1.TaskSpec{Type: "x", Inputs: map[string][]byte{"a/b": nil}}, "task.inputs"},
		{"empty inline input name", &paddockv1.TaskSpec{Type: "x", Inputs: map[string][]byte{"": []byte("x")}}, "task.inputs"},
		{"long type", &paddockv1.TaskSpec{Type: strings.Repeat("a", 5000)}, "task.type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: tc.spec}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(ce.Message(), tc.field) {
				t.Fatalf("err = %v; want InvalidArgument naming %s", err, tc.field)
			}
			// The message quotes at most a short prefix of what was sent.
			if len(ce.Message()) > 400 {
				t.Errorf("the error is %d bytes long: quote less of the input", len(ce.Message()))
			}
		})
	}
	t.Run("an inline input with a good name is kept", func(t *testing.T) {
		r, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "x", Inputs: map[string][]byte{"in_1.txt": []byte("hi")}}}))
		if err != nil || string(r.Msg.GetTask().GetSpec().GetInputs()["in_1.txt"]) != "hi" {
			t.Fatalf("submit with input in_1.txt: %v %v", r, err)
		}
	})
	post := func(body, auth string) (int, string) {
		req, _ := http.NewRequest("POST", ts.url+"/paddock.v1.TaskService/Submit", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	t.Run("unknown JSON field", func(t *testing.T) {
		code, body := post(`{"task":{"type":"x","priorty":3}}`, "Bearer s3cret")
		if code != 400 || !strings.Contains(body, "invalid_argument") || !strings.Contains(body, "priorty") {
			t.Fatalf("HTTP %d %s; want 400 invalid_argument naming priorty", code, body)
		}
	})
	t.Run("missing token", func(t *testing.T) {
		code, body := post(`{"task":{"type":"x"}}`, "")
		if code != 401 || !strings.Contains(body, "unauthenticated") || !strings.Contains(body, "authorization") {
			t.Fatalf("HTTP %d %s; want 401 unauthenticated", code, body)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		if code, _ := post(`{"task":{"type":"x"}}`, "Bearer nope"); code != 401 {
			t.Fatalf("HTTP %d, want 401", code)
		}
	})
	t.Run("JSON submit works", func(t *testing.T) {
		code, body := post(`{"task":{"type":"x","payload":"aGk=","priority":3}}`, "Bearer s3cret")
		if code != 200 || !strings.Contains(body, `"STATE_QUEUED"`) {
			t.Fatalf("HTTP %d %s", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(ts.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, m := range []string{`paddock_tasks{state="queued",type="x"}`, "paddock_agents", "paddock_lease_expiries_total", `paddock_build_info{goversion="go`} {
			if !strings.Contains(string(b), m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
	})
}
