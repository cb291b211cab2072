package sched_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// logTexts returns the texts of the stored lines (every attempt) of task id.
func logTexts(t *testing.T, ts *testServer, id string) []string {
	t.Helper()
	r, err := ts.tasks.Logs(context.Background(), connect.NewRequest(&paddockv1.LogsRequest{Id: id}))
	if err != nil {
		t.Fatalf("Logs(%s): %v", id, err)
	}
	var out []string
	for _, a := range r.Msg.GetAttempts() {
		for _, l := range a.GetLines() {
			out = append(out, l.GetText())
		}
	}
	return out
}

// TestLiveLogChunks: a real agent process runs the real testhandler's test.logwait,
// which logs a line and blocks until the test creates a file. The line reaches the
// server's stored log while the task runs (a LogChunk). A LogChunk for that task from a
// session that does not hold its lease is refused: its line is never stored. Once
// released, the task's log has each line exactly once.
func TestLiveLogChunks(t *testing.T) {
	ts := startServer(t, fastConfig())
	startRealAgent(t, ts.agentAddr, "live-a", "")
	release := filepath.Join(t.TempDir(), "release")
	_, changes := watchStream(t, ts, &paddockv1.WatchTasksRequest{}) // the feed's "log" events must not reach it
	task := submit(t, ts, &paddockv1.TaskSpec{Type: "test.logwait", Payload: []byte(release)})

	waiting := "waiting for " + release
	deadline := time.Now().Add(3 * time.Minute)
	for !slices.Contains(logTexts(t, ts, task.GetId()), waiting) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the running task's log after 3 minutes: %q", waiting, logTexts(t, ts, task.GetId()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	g, err := ts.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: task.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	running := g.Msg.GetTask()
	if running.GetState() != paddockv1.State_STATE_RUNNING && running.GetState() != paddockv1.State_STATE_LEASED {
		t.Fatalf("task is %v while its handler waits; want running", running.GetState())
	}

	// An intruder with the right lease id (but not the lease's agent or secret).
	rs := openRaw(t, ts.agentAddr, "intruder")
	forged := &agentv1.LogChunk{TaskId: task.GetId(), LeaseId: running.GetLeaseId(), LeaseSecret: "guessed",
		Log: &agentv1.TaskLog{Lines: []*agentv1.LogLine{{UnixNanos: time.Now().UnixNano(), Level: "error", Text: "forged line"}}}}
	if err := rs.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_LogChunk{LogChunk: forged}}); err != nil {
		t.Fatal(err)
	}
	// The server handles one session's messages of a task in order: once this report's
	// ack is back, the chunk has been handled.
	if ack := rs.report(t, &agentv1.Report{TaskId: task.GetId(), LeaseId: running.GetLeaseId(), LeaseSecret: "guessed",
		Status: agentv1.Status_STATUS_FAILED, Error: "x"}); ack.GetOutcome() == agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("the intruder's report was accepted: %v", ack)
	}
	if got := logTexts(t, ts, task.GetId()); slices.Contains(got, "forged line") {
		t.Fatalf("a chunk from a session without the lease was stored: %q", got)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if done := wait(t, ts, task.GetId(), 3*time.Minute); done.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("task ended %v: %s", done.GetState(), done.GetError())
	}
	if got := logTexts(t, ts, task.GetId()); strings.Join(got, "|") != waiting+"|released" {
		t.Errorf("stored log = %q; want %q then \"released\", once each", got, waiting)
	}
	// WatchTasks sent task changes only: a log event is not a task.
	for {
		m := next(t, changes)
		if m.GetTask().GetId() != task.GetId() || m.GetTask().GetSpec().GetType() != "test.logwait" {
			t.Fatalf("WatchTasks sent %v; want only changes of task %s", m, task.GetId())
		}
		if m.GetTask().GetState() == paddockv1.State_STATE_SUCCEEDED {
			break
		}
	}
}
