package sched_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// startAgentWith runs an in-process agent offering capacity, with slots per type.
func startAgentWith(t *testing.T, ts *testServer, id string, capacity session.Capacity, slots map[string]int, ex session.Executor) {
	t.Helper()
	total := 0
	for _, n := range slots {
		total += n
	}
	runAgent(t, session.Config{AgentID: id, Host: "test", Dial: session.TCPDialer(ts.agentAddr), ReconnectMin: 20 * time.Millisecond,
		Capacity: capacity, Slots: slots, TotalSlots: total, MinSlots: slots}, ex)
}

func explain(t *testing.T, ts *testServer, id string) *paddockv1.ExplainResponse {
	t.Helper()
	r, err := ts.tasks.Explain(context.Background(), connect.NewRequest(&paddockv1.ExplainRequest{Id: id}))
	if err != nil {
		t.Fatalf("explain %s: %v", id, err)
	}
	return r.Msg
}

// waitExplain waits until the explanation of id has a reason of kind k, and returns it.
func waitExplain(t *testing.T, ts *testServer, id string, k paddockv1.Reason_Kind) *paddockv1.Reason {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last *paddockv1.ExplainResponse
	for time.Now().Before(deadline) {
		last = explain(t, ts, id)
		for _, r := range last.GetReasons() {
			if r.GetKind() == k {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("task %s: no reason %v after 1 min; last explanation: %v", id, k, last)
	return nil
}

// waitAgents waits until n agents are connected.
func waitAgents(t testing.TB, ts *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		r, err := ts.cluster.Status(context.Background(), connect.NewRequest(&paddockv1.StatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if int(r.Msg.GetAgentsConnected()) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d agents not connected after 1 min", n)
}

func TestExplain(t *testing.T) {
	cfg := fastConfig()
	cfg.RetryBase, cfg.RetryMax = time.Hour, time.Hour // a retried task stays in its backoff
	ts := startServer(t, cfg)
	release := make(chan struct{})
	ex := &fakeExec{types: []session.TaskType{{Name: "ex.work", Version: "1"}, {Name: "ex.flaky", Version: "1"}},
		fn: func(ctx context.Context, tk session.Task) session.Result {
			if tk.Type == "ex.flaky" {
				return session.Result{Error: "transient, as asked", Retryable: true}
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return session.Result{Output: []byte("done")}
		}}
	startAgentWith(t, ts, "a1", session.Capacity{CPUMillis: 1000, Labels: map[string]string{"zone": "a"}},
		map[string]int{"ex.work": 1, "ex.flaky": 1}, ex)
	waitAgents(t, ts, 1)

	t.Run("no agent serves the type", func(t *testing.T) {
		id := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody.serves"}).GetId()
		r := waitExplain(t, ts, id, paddockv1.Reason_KIND_NO_SERVER)
		if !strings.Contains(r.GetMessage(), "nobody.serves") || !strings.Contains(r.GetMessage(), "ex.work") {
			t.Errorf("message names neither the type nor the types served: %q", r.GetMessage())
		}
		// Get's warning is the same reason, computed in one place.
		g, err := ts.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if err != nil || g.Msg.GetWarning() != r.GetMessage() {
			t.Errorf("Get warning = %q, %v; want Explain's reason %q", g.Msg.GetWarning(), err, r.GetMessage())
		}
		// A served type's task gets no warning.
		sub, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "ex.flaky", MaxAttempts: 1}}))
		if err != nil || sub.Msg.GetWarning() != "" {
			t.Errorf("Submit of a served type: warning %q, %v; want none", sub.Msg.GetWarning(), err)
		}
	})
	t.Run("requirements nobody meets", func(t *testing.T) {
		id := submit(t, ts, &paddockv1.TaskSpec{Type: "ex.work", Requirements: &paddockv1.Requirements{Labels: map[string]string{"zone": "b"}}}).GetId()
		r := waitExplain(t, ts, id, paddockv1.Reason_KIND_REQUIREMENTS)
		if !strings.Contains(r.GetMessage(), "labels[zone]") || !strings.Contains(r.GetMessage(), "a1") {
			t.Errorf("message: %q", r.GetMessage())
		}
		id = submit(t, ts, &paddockv1.TaskSpec{Type: "ex.work", Requirements: &paddockv1.Requirements{CpuMillis: 2000}}).GetId()
		if r := waitExplain(t, ts, id, paddockv1.Reason_KIND_REQUIREMENTS); !strings.Contains(r.GetMessage(), "cpu_millis = 2000") {
			t.Errorf("message: %q", r.GetMessage())
		}
	})
	var first, second string
	t.Run("no free slot", func(t *testing.T) {
		first = submit(t, ts, &paddockv1.TaskSpec{Type: "ex.work"}).GetId()
		r := waitExplain(t, ts, first, paddockv1.Reason_KIND_NOT_QUEUED)
		if !strings.Contains(r.GetMessage(), "a1") {
			t.Errorf("message of a leased or running task: %q", r.GetMessage())
		}
		second = submit(t, ts, &paddockv1.TaskSpec{Type: "ex.work"}).GetId()
		r = waitExplain(t, ts, second, paddockv1.Reason_KIND_NO_CAPACITY)
		if !strings.Contains(r.GetMessage(), "1 of 1 slots") {
			t.Errorf("message: %q", r.GetMessage())
		}
	})
	t.Run("ended", func(t *testing.T) {
		close(release)
		wait(t, ts, first, time.Minute)
		wait(t, ts, second, time.Minute)
		ex := explain(t, ts, second)
		if ex.GetState() != paddockv1.State_STATE_SUCCEEDED || len(ex.GetReasons()) != 1 || !strings.Contains(ex.GetReasons()[0].GetMessage(), "succeeded") {
			t.Errorf("explanation of a finished task: %v", ex)
		}
	})
	t.Run("backoff", func(t *testing.T) {
		id := submit(t, ts, &paddockv1.TaskSpec{Type: "ex.flaky", MaxAttempts: 3}).GetId()
		r := waitExplain(t, ts, id, paddockv1.Reason_KIND_BACKOFF)
		if r.GetUntilUnixMs() <= time.Now().UnixMilli() {
			t.Errorf("backoff until %v, which is not in the future", time.UnixMilli(r.GetUntilUnixMs()))
		}
	})
	t.Run("bad input", func(t *testing.T) {
		_, err := ts.tasks.Explain(context.Background(), connect.NewRequest(&paddockv1.ExplainRequest{Id: "no-such-task"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("explain of a missing task: %v, want not found", err)
		}
		_, err = ts.tasks.Explain(context.Background(), connect.NewRequest(&paddockv1.ExplainRequest{}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "id") {
			t.Errorf("explain without id: %v, want invalid argument naming id", err)
		}
	})
}

func TestRetry(t *testing.T) {
	ts := startServer(t, fastConfig())
	ex := &fakeExec{types: []session.TaskType{{Name: "rt.fail", Version: "1"}, {Name: "rt.echo", Version: "1"}},
		fn: func(_ context.Context, tk session.Task) session.Result {
			if tk.Type == "rt.fail" && string(tk.Payload) == "fail" {
				return session.Result{Error: "failing, as asked"}
			}
			return session.Result{Output: tk.Payload}
		}}
	startAgent(t, ts, "r1", ex)
	failed := submit(t, ts, &paddockv1.TaskSpec{Type: "rt.fail", Payload: []byte("fail"), Priority: 7, IdempotencyKey: "once"})
	if got := wait(t, ts, failed.GetId(), time.Minute); got.GetState() != paddockv1.State_STATE_FAILED {
		t.Fatalf("task ended %v, want FAILED", got.GetState())
	}
	r, err := ts.tasks.Retry(context.Background(), connect.NewRequest(&paddockv1.RetryRequest{Id: failed.GetId()}))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	nt := r.Msg.GetTask()
	if nt.GetId() == failed.GetId() || r.Msg.GetRetryOf() != failed.GetId() {
		t.Errorf("retry gave task %s (retry_of %s) for %s", nt.GetId(), r.Msg.GetRetryOf(), failed.GetId())
	}
	if sp := nt.GetSpec(); sp.GetType() != "rt.fail" || string(sp.GetPayload()) != "fail" || sp.GetPriority() != 7 || sp.GetIdempotencyKey() != "" {
		t.Errorf("retried spec %v: want the old spec without its idempotency key", sp)
	}
	wait(t, ts, nt.GetId(), time.Minute)
	if old := wait(t, ts, failed.GetId(), time.Minute); old.GetState() != paddockv1.State_STATE_FAILED {
		t.Errorf("the retried task changed to %v", old.GetState())
	}

	ok := submit(t, ts, &paddockv1.TaskSpec{Type: "rt.echo", Payload: []byte("x")})
	wait(t, ts, ok.GetId(), time.Minute)
	for _, tc := range []struct {
		name, id string
		want     connect.Code
	}{
		{"succeeded task", ok.GetId(), connect.CodeFailedPrecondition},
		{"missing task", "no-such-task", connect.CodeNotFound},
		{"no id", "", connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.tasks.Retry(context.Background(), connect.NewRequest(&paddockv1.RetryRequest{Id: tc.id}))
			if connect.CodeOf(err) != tc.want {
				t.Errorf("retry %q: %v, want %v", tc.id, err, tc.want)
			}
		})
	}
}

// TestHistoryAndFeed: the history counts what the server did, and the feed carries
// every change of a task (submitted alone or in a batch) to a subscriber, ending with
// its terminal state.
func TestHistoryAndFeed(t *testing.T) {
	ts := startServer(t, fastConfig())
	ex := &fakeExec{types: []session.TaskType{{Name: "hf.run", Version: "1"}},
		fn: func(_ context.Context, tk session.Task) session.Result {
			if string(tk.Payload) == "fail" {
				return session.Result{Error: "failing, as asked"}
			}
			return session.Result{Output: tk.Payload}
		}}
	startAgent(t, ts, "h1", ex)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("GET /ui/events: %d %s", res.StatusCode, ct)
	}
	events := make(chan string, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		name := ""
		for sc.Scan() {
			switch l := sc.Text(); {
			case strings.HasPrefix(l, "event: "):
				name = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: "):
				events <- name + " " + strings.TrimPrefix(l, "data: ")
			}
		}
	}()
	if ev := <-events; !strings.HasPrefix(ev, "hello ") {
		t.Fatalf("first event %q, want hello", ev)
	}

	ids := []string{submit(t, ts, &paddockv1.TaskSpec{Type: "hf.run", Payload: []byte("a")}).GetId()}
	br, err := ts.tasks.SubmitBatch(context.Background(), connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: []*paddockv1.TaskSpec{
		{Type: "hf.run", Payload: []byte("b")}, {Type: "hf.run", Payload: []byte("fail")}}}))
	if err != nil {
		t.Fatalf("submit batch: %v", err)
	}
	for _, r := range br.Msg.GetResults() {
		ids = append(ids, r.GetTask().GetId())
	}
	for _, id := range ids {
		wait(t, ts, id, time.Minute)
	}
	seen := map[string]map[string]bool{} // id -> states seen in the feed
	for ended := 0; ended < len(ids); {
		ev, ok := <-events
		if !ok {
			t.Fatalf("the feed ended early (seen %v): %v", seen, ctx.Err())
		}
		for _, id := range ids {
			if !strings.Contains(ev, `"`+id+`"`) {
				continue
			}
			if seen[id] == nil {
				seen[id] = map[string]bool{}
			}
			for _, st := range []string{"QUEUED", "LEASED", "RUNNING", "SUCCEEDED", "FAILED"} {
				if strings.Contains(ev, `"STATE_`+st+`"`) {
					seen[id][st] = true
					if st == "SUCCEEDED" || st == "FAILED" {
						ended++
					}
				}
			}
			if strings.Contains(ev, `"payload"`) {
				t.Errorf("a feed event carries the payload: %s", ev)
			}
		}
	}
	for _, id := range ids {
		if !seen[id]["QUEUED"] || !seen[id]["LEASED"] {
			t.Errorf("task %s: the feed showed states %v, want queued and leased too", id, seen[id])
		}
	}

	h, err := ts.cluster.History(context.Background(), connect.NewRequest(&paddockv1.HistoryRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var sum paddockv1.Sample
	for _, s := range h.Msg.GetSamples() {
		sum.Submitted += s.GetSubmitted()
		sum.Started += s.GetStarted()
		sum.Succeeded += s.GetSucceeded()
		sum.Failed += s.GetFailed()
		if s.GetLatencyMaxMs() < s.GetLatencyAvgMs() || s.GetDurationMs() > h.Msg.GetIntervalMs() {
			t.Errorf("sample %v: latency max below average, or longer than the interval", s)
		}
	}
	if sum.Submitted != 3 || sum.Started != 3 || sum.Succeeded != 2 || sum.Failed != 1 {
		t.Errorf("history counted submitted %d, started %d, succeeded %d, failed %d; want 3, 3, 2, 1",
			sum.Submitted, sum.Started, sum.Succeeded, sum.Failed)
	}
	if last := h.Msg.GetSamples()[len(h.Msg.GetSamples())-1]; last.GetQueued() != 0 || last.GetRunning() != 0 {
		t.Errorf("last sample: queued %d, running %d; want 0 and 0", last.GetQueued(), last.GetRunning())
	}
	cancel()
	for range events { // the stream ends with the request
	}
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("ctx: %v", err)
	}
}
