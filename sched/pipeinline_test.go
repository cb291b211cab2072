package sched_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// TestPipelineInlineOutputs: an upstream that writes no output file passes its inline
// output on: "@stage:NAME" is the stage's inline output, "@stage:NAME/OUTPUT" its named
// inline output; they reach the downstream's handler as inline inputs beside its own.
// An inline output too large for the downstream's inline limit fails it, naming the fix.
func TestPipelineInlineOutputs(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxInlineBytes = 64 << 10
	ts := startServer(t, cfg)
	ex := &fakeExec{types: []session.TaskType{{Name: "produce", Concurrency: 2}, {Name: "consume", Concurrency: 2}},
		fn: func(_ context.Context, tk session.Task) session.Result {
			if tk.Type == "produce" {
				out := tk.Payload
				if string(tk.Payload) == "big" {
					out = make([]byte, 40<<10)
				}
				return session.Result{Output: out, Outputs: map[string][]byte{"stats": []byte("len=" + string(rune('0'+len(tk.Payload))))}}
			}
			var names []string
			for n := range tk.Inputs {
				names = append(names, n)
			}
			sort.Strings(names)
			var b strings.Builder
			for _, n := range names {
				b.WriteString(n + "=" + string(tk.Inputs[n]) + ";")
			}
			return session.Result{Output: []byte(b.String())}
		}}
	runAgent(t, session.Config{AgentID: "inl", Host: "test", Dial: session.TCPDialer(ts.agentAddr), DataDir: t.TempDir(), ReconnectMin: 20 * time.Millisecond}, ex)

	run := func(stages ...*paddockv1.Stage) *paddockv1.Task {
		r, err := ts.tasks.SubmitPipeline(context.Background(), connect.NewRequest(&paddockv1.SubmitPipelineRequest{Stages: stages}))
		if err != nil {
			t.Fatal(err)
		}
		return wait(t, ts, r.Msg.GetStages()[len(stages)-1].GetTask().GetId(), time.Minute)
	}
	produce := func(name, payload string) *paddockv1.Stage {
		return &paddockv1.Stage{Name: name, Task: &paddockv1.TaskSpec{Type: "produce", Payload: []byte(payload)}}
	}
	consume := func(in map[string]string) *paddockv1.Stage {
		return &paddockv1.Stage{Name: "last", Task: &paddockv1.TaskSpec{Type: "consume", Inputs: map[string][]byte{"own": []byte("mine")}, InputTasks: in}}
	}
	got := run(produce("first", "abc"), consume(map[string]string{"data": "@stage:first", "meta": "@stage:first/stats"}))
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || string(got.GetOutput()) != "data=abc;meta=len=3;own=mine;" {
		t.Fatalf("downstream of inline outputs: %v, output %q; want succeeded with data=abc;meta=len=3;own=mine;", got.GetState(), got.GetOutput())
	}
	// Two upstreams of 40 KiB each: each within the 64 KiB limit, together over it.
	big := run(produce("a", "big"), produce("b", "big"), consume(map[string]string{"x": "@stage:a", "y": "@stage:b"}))
	if big.GetState() != paddockv1.State_STATE_FAILED || !strings.Contains(big.GetError(), "server.max_inline_bytes") || !strings.Contains(big.GetError(), "output file") {
		t.Fatalf("downstream of inline outputs past the limit: %v %q; want failed naming server.max_inline_bytes and the fix", big.GetState(), big.GetError())
	}
}
