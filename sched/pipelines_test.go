package sched_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/blob"
)

// pipelineServer starts a server with a blob store and one TCP agent serving blobecho
// (the input "in" upper-cased into the output "out") and "failing" (a retryable error).
func pipelineServer(t *testing.T, dbPath string) (*testServer, *blob.FS) {
	t.Helper()
	cfg := fastConfig()
	fs, err := blob.OpenFS(filepath.Join(filepath.Dir(dbPath), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Blobs = fs
	ts := startServerAt(t, cfg, dbPath)
	ex := blobEcho()
	ex.types = append(ex.types, session.TaskType{Name: "failing", Concurrency: 1})
	echo := ex.fn
	ex.fn = func(ctx context.Context, tk session.Task) session.Result {
		if tk.Type == "failing" {
			return session.Result{Error: "disk on fire", Retryable: true}
		}
		return echo(ctx, tk)
	}
	runAgent(t, session.Config{AgentID: "p1", Host: "test", Dial: session.TCPDialer(ts.agentAddr), DataDir: t.TempDir(), ReconnectMin: 20 * time.Millisecond}, ex)
	return ts, fs
}

// TestPipelineChain: a task reading @task:ID waits until the upstream succeeds, then runs
// with the upstream's output blob as its input; "@task:ID/out" names the output.
func TestPipelineChain(t *testing.T) {
	ts, fs := pipelineServer(t, filepath.Join(t.TempDir(), "paddock.db"))
	in := putBlob(t, fs, "abc")
	up := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(in)}}})
	down := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + up.GetId()}})
	if s := down.GetState(); s != paddockv1.State_STATE_WAITING && s != paddockv1.State_STATE_QUEUED {
		t.Fatalf("downstream submitted as %v; want waiting", s)
	}
	third := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + down.GetId() + "/out"}})
	got := wait(t, ts, third.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("third stage = %v; want succeeded", got)
	}
	upDone := wait(t, ts, up.GetId(), time.Second)
	downDone := wait(t, ts, down.GetId(), time.Second)
	if downDone.GetSpec().GetInputBlobs()["in"].GetDigest() != upDone.GetOutputBlobs()["out"].GetDigest() {
		t.Fatalf("downstream input %v; want the upstream's output %v", downDone.GetSpec().GetInputBlobs(), upDone.GetOutputBlobs())
	}
	if s := readBlob(t, fs, got.GetOutputBlobs()["out"].GetDigest()); s != "ABC" {
		t.Fatalf("third stage output %q; want ABC", s)
	}
	if r := downDone.GetSpec().GetInputTasks()["in"]; r != "@task:"+up.GetId() {
		t.Fatalf("downstream spec input_tasks = %q; want @task:%s", r, up.GetId())
	}
}

// TestPipelineBadInput: an unknown upstream, a stage reference outside a pipeline, a
// name clash, an upstream that ends dead, a missing output name, a cancelled upstream.
func TestPipelineBadInput(t *testing.T) {
	ts, fs := pipelineServer(t, filepath.Join(t.TempDir(), "paddock.db"))
	ctx := context.Background()
	_, err := ts.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "blobecho",
		InputTasks: map[string]string{"in": "@task:0193d1e4-0000-7000-8000-000000000000"}}}))
	if connectCode(err) != connect.CodeNotFound || !strings.Contains(err.Error(), "0193d1e4-0000-7000-8000-000000000000 does not exist") {
		t.Fatalf("unknown upstream: %v; want not found naming the id", err)
	}
	_, err = ts.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "blobecho",
		InputTasks: map[string]string{"in": "@stage:a"}}}))
	if connectCode(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "SubmitPipeline") {
		t.Fatalf("stage reference in Submit: %v; want invalid pointing at SubmitPipeline", err)
	}
	_, err = ts.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "blobecho",
		Inputs: map[string][]byte{"in": []byte("x")}, InputTasks: map[string]string{"in": "@task:x"}}}))
	if connectCode(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `task.input_tasks["in"]`) {
		t.Fatalf("name clash: %v; want invalid naming task.input_tasks[\"in\"]", err)
	}

	dead := submit(t, ts, &paddockv1.TaskSpec{Type: "failing", MaxAttempts: 1})
	d1 := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + dead.GetId()}})
	got := wait(t, ts, d1.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_FAILED || !strings.Contains(got.GetError(), "upstream task "+dead.GetId()+" ended dead: ") ||
		!strings.Contains(got.GetError(), "disk on fire") {
		t.Fatalf("downstream of a dead upstream = %v; want failed naming the upstream and its error", got)
	}
	if got.GetFailureKind() != paddockv1.FailureKind_FAILURE_KIND_UPSTREAM_FAILED {
		t.Fatalf("downstream of a dead upstream: failure kind %v; want UPSTREAM_FAILED", got.GetFailureKind())
	}

	in := putBlob(t, fs, "x")
	ok := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(in)}}})
	d2 := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + ok.GetId() + "/nope"}})
	got = wait(t, ts, d2.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_FAILED || !strings.Contains(got.GetError(), `produced no output "nope" (its output blobs: out; its inline outputs: none)`) {
		t.Fatalf("downstream of a missing output = %v; want failed naming the output", got)
	}
	// Now that the upstream succeeded, the same mistake is refused at submit.
	_, err = ts.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "blobecho",
		InputTasks: map[string]string{"in": "@task:" + ok.GetId() + "/nope"}}}))
	if connectCode(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("missing output of a succeeded upstream at submit: %v; want invalid naming it", err)
	}

	never := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody-serves-this"})
	d3 := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + never.GetId()}})
	if _, err := ts.tasks.Cancel(ctx, connect.NewRequest(&paddockv1.CancelRequest{Id: never.GetId()})); err != nil {
		t.Fatal(err)
	}
	got = wait(t, ts, d3.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_FAILED || !strings.Contains(got.GetError(), "ended cancelled") {
		t.Fatalf("downstream of a cancelled upstream = %v; want failed", got)
	}
	// Explain says what a waiting task waits for.
	never2 := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody-serves-this"})
	d4 := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + never2.GetId()}})
	ex, err := ts.tasks.Explain(ctx, connect.NewRequest(&paddockv1.ExplainRequest{Id: d4.GetId()}))
	if err != nil || len(ex.Msg.GetReasons()) == 0 || !strings.Contains(ex.Msg.GetReasons()[0].GetMessage(), "in <- task "+never2.GetId()) {
		t.Fatalf("Explain of a waiting task = %v, %v; want it to name the upstream", ex, err)
	}
	// A waiting task can be cancelled itself.
	r, err := ts.tasks.Cancel(ctx, connect.NewRequest(&paddockv1.CancelRequest{Id: d4.GetId()}))
	if err != nil || r.Msg.GetTask().GetState() != paddockv1.State_STATE_CANCELLED {
		t.Fatalf("cancelling a waiting task = %v, %v; want cancelled", r, err)
	}
}

// TestSubmitPipeline: a DAG in one call, stored in dependency order whatever the order
// given; a cycle and an unknown stage are refused, naming them, and store nothing.
func TestSubmitPipeline(t *testing.T) {
	ts, fs := pipelineServer(t, filepath.Join(t.TempDir(), "paddock.db"))
	ctx := context.Background()
	in := putBlob(t, fs, "dag")
	stage := func(name string, refs map[string]string) *paddockv1.Stage {
		sp := &paddockv1.TaskSpec{Type: "blobecho", InputTasks: refs}
		if refs == nil {
			sp.InputBlobs = map[string]*paddockv1.BlobRef{"in": {Digest: string(in)}}
		}
		return &paddockv1.Stage{Name: name, Task: sp}
	}
	for _, bad := range []struct {
		name   string
		stages []*paddockv1.Stage
		want   string
	}{
		{"cycle", []*paddockv1.Stage{stage("a", map[string]string{"in": "@stage:b"}), stage("b", map[string]string{"in": "@stage:a/out"})}, "cycle: a -> b -> a"},
		{"unknown", []*paddockv1.Stage{stage("a", map[string]string{"in": "@stage:zz"})}, `reads from stage "zz"`},
		{"bad spec", []*paddockv1.Stage{stage("a", nil), {Name: "b", Task: &paddockv1.TaskSpec{}}}, "stages[1] (b).task.type: missing"},
	} {
		_, err := ts.tasks.SubmitPipeline(ctx, connect.NewRequest(&paddockv1.SubmitPipelineRequest{Stages: bad.stages}))
		if connectCode(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("%s: %v; want invalid with %q", bad.name, err, bad.want)
		}
	}
	if l, err := ts.tasks.List(ctx, connect.NewRequest(&paddockv1.ListRequest{})); err != nil || len(l.Msg.GetTasks()) != 0 {
		t.Fatalf("refused pipelines stored %d tasks (%v); want none", len(l.Msg.GetTasks()), err)
	}
	r, err := ts.tasks.SubmitPipeline(ctx, connect.NewRequest(&paddockv1.SubmitPipelineRequest{Stages: []*paddockv1.Stage{
		stage("checksum", map[string]string{"in": "@stage:compress/out"}), stage("compress", nil)}}))
	if err != nil {
		t.Fatal(err)
	}
	st := r.Msg.GetStages()
	if len(st) != 2 || st[0].GetName() != "checksum" || st[1].GetName() != "compress" ||
		st[0].GetTask().GetSpec().GetInputTasks()["in"] != "@task:"+st[1].GetTask().GetId()+"/out" {
		t.Fatalf("SubmitPipeline = %v; want the stages in request order, checksum reading @task:<compress id>/out", st)
	}
	got := wait(t, ts, st[0].GetTask().GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || readBlob(t, fs, got.GetOutputBlobs()["out"].GetDigest()) != "DAG" {
		t.Fatalf("last stage = %v; want succeeded with DAG", got)
	}
}

// TestPipelineRestart: the waiting set survives a server restart: a task waiting when
// the server stops is queued once its upstream succeeds after the restart.
func TestPipelineRestart(t *testing.T) {
	db := filepath.Join(t.TempDir(), "paddock.db")
	cfg := fastConfig()
	fs, err := blob.OpenFS(filepath.Join(filepath.Dir(db), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Blobs = fs
	ts := startServerAt(t, cfg, db)
	in := putBlob(t, fs, "restart")
	up := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(in)}}})
	down := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputTasks: map[string]string{"in": "@task:" + up.GetId()}})
	ts.stop()
	ts2, _ := pipelineServer(t, db)
	got := wait(t, ts2, down.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || readBlob(t, fs, got.GetOutputBlobs()["out"].GetDigest()) != "RESTART" {
		t.Fatalf("downstream after a restart = %v; want succeeded", got)
	}
}
