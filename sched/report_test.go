package sched_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// TestSuccessReportAfterStoreChange: a success report is applied from the task as its
// lease left it, without reading the task again. When the task changed in the store
// meanwhile without this server knowing (here another replica's expiry, written straight
// to the store, ends it dead), the report must lose the compare-and-swap and change
// nothing: the task stays dead, with no output.
func TestSuccessReportAfterStoreChange(t *testing.T) {
	ts := startServer(t, rawAgentConfig())
	started := make(chan string, 1)
	release := make(chan struct{})
	startAgent(t, ts, "a1", &fakeExec{types: []session.TaskType{{Name: "gate", Concurrency: 1}},
		fn: func(ctx context.Context, tk session.Task) session.Result {
			started <- tk.ID
			<-release
			return session.Result{Output: []byte("late success")}
		}})
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "gate", MaxAttempts: 1}).GetId()
	select {
	case got := <-started:
		if got != id {
			t.Fatalf("agent ran %s, want %s", got, id)
		}
	case <-time.After(time.Minute):
		t.Fatal("the task never started")
	}
	st := ts.srv.Store()
	ctx := context.Background()
	var tk store.Task
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if tk, err = st.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
		if tk.State == store.Running { // the ack is recorded
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task is %s, want running", tk.State)
		}
	}
	u, err := store.Transition(tk, store.EvExpire, store.Change{Now: time.Now(), Error: "expired by another replica", FailureKind: store.LeaseExpired})
	if err != nil {
		t.Fatal(err)
	}
	if nt, err := st.Update(ctx, u); err != nil || nt.State != store.Dead {
		t.Fatalf("expiring behind the server's back: %v %v, want dead", nt.State, err)
	}
	close(release)
	// The agent's report is answered as a duplicate (the task already has its end):
	// wait for that answer in /metrics, then check nothing changed.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(metricsText(t, ts), `paddock_reports_total{outcome="duplicate"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent's report was never answered as a duplicate")
		}
	}
	after, err := st.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != store.Dead || len(after.Output) != 0 || after.Error != "expired by another replica" {
		t.Fatalf("after the late success report: state %s output %q error %q; want dead, no output, the expiry's error", after.State, after.Output, after.Error)
	}
}

func metricsText(t testing.TB, ts *testServer) string {
	t.Helper()
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
