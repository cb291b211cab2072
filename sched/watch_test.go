package sched_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// watchStream opens WatchTasks with req and returns its first message (the list) and
// a channel of the later ones; the stream ends with the test.
func watchStream(t *testing.T, ts *testServer, req *paddockv1.WatchTasksRequest) ([]*paddockv1.Task, <-chan *paddockv1.WatchTasksResponse) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := ts.tasks.WatchTasks(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("WatchTasks: %v", err)
	}
	if !st.Receive() {
		t.Fatalf("WatchTasks: no first message: %v", st.Err())
	}
	first := st.Msg()
	if first.GetTask() != nil {
		t.Fatalf("WatchTasks: the first message carries a change %v, want the list", first.GetTask())
	}
	out := make(chan *paddockv1.WatchTasksResponse, 64)
	go func() {
		defer close(out)
		defer st.Close()
		for st.Receive() {
			out <- st.Msg()
		}
	}()
	return first.GetSnapshot(), out
}

// next returns the next change, failing after two minutes.
func next(t *testing.T, ch <-chan *paddockv1.WatchTasksResponse) *paddockv1.WatchTasksResponse {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("the watch ended")
		}
		return m
	case <-time.After(2 * time.Minute):
		t.Fatal("no change on the watch after 2 minutes")
	}
	return nil
}

// TestWatchTasks follows tasks through a real server (SQLite, TCP agent): the first
// message lists the matching tasks, then each change of a matching task arrives, up
// to its end; a task of another type is never sent.
func TestWatchTasks(t *testing.T) {
	ts := startServer(t, fastConfig())
	old := submit(t, ts, &paddockv1.TaskSpec{Type: "watch.echo", Payload: []byte("old")})

	list, changes := watchStream(t, ts, &paddockv1.WatchTasksRequest{Type: "watch.echo"})
	if len(list) != 1 || list[0].GetId() != old.GetId() {
		t.Fatalf("first list = %v, want only %s", list, old.GetId())
	}
	startAgent(t, ts, "watch-agent", &fakeExec{types: []session.TaskType{{Name: "watch.echo", Concurrency: 2}, {Name: "watch.other"}}, fn: echo})
	fresh := submit(t, ts, &paddockv1.TaskSpec{Type: "watch.echo", Payload: []byte("new")})
	done := map[string]bool{}
	for len(done) < 2 {
		m := next(t, changes)
		task := m.GetTask()
		switch task.GetId() {
		case old.GetId(), fresh.GetId():
		default:
			t.Fatalf("change of %s (type %s): want only watch.echo tasks %s and %s", task.GetId(), task.GetSpec().GetType(), old.GetId(), fresh.GetId())
		}
		if m.GetLeft() {
			t.Fatalf("change with left set and no state filter: %v", m)
		}
		if len(task.GetOutput()) != 0 || len(task.GetSpec().GetPayload()) != 0 {
			t.Fatalf("change of %s carries payload or output; want the task as List returns it", task.GetId())
		}
		if task.GetState() == paddockv1.State_STATE_SUCCEEDED {
			done[task.GetId()] = true
		}
	}
	// A task of another type runs to its end unseen: the next change is the next echo's.
	other := submit(t, ts, &paddockv1.TaskSpec{Type: "watch.other"})
	wait(t, ts, other.GetId(), 2*time.Minute)
	last := submit(t, ts, &paddockv1.TaskSpec{Type: "watch.echo"})
	if m := next(t, changes); m.GetTask().GetId() != last.GetId() {
		t.Fatalf("after a watch.other task ran: change of %s (%s), want %s", m.GetTask().GetId(), m.GetTask().GetSpec().GetType(), last.GetId())
	}
}

// TestWatchTasksStateFilter watches the queued tasks: a submit arrives, and a cancel
// sends the task once more with left set (a live list drops it).
func TestWatchTasksStateFilter(t *testing.T) {
	ts := startServer(t, fastConfig())
	list, changes := watchStream(t, ts, &paddockv1.WatchTasksRequest{State: paddockv1.State_STATE_QUEUED})
	if len(list) != 0 {
		t.Fatalf("first list of an empty server = %v", list)
	}
	task := submit(t, ts, &paddockv1.TaskSpec{Type: "watch.nobody"})
	m := next(t, changes)
	if m.GetTask().GetId() != task.GetId() || m.GetTask().GetState() != paddockv1.State_STATE_QUEUED || m.GetLeft() {
		t.Fatalf("after submit: %v, want %s QUEUED", m, task.GetId())
	}
	if _, err := ts.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: task.GetId()})); err != nil {
		t.Fatal(err)
	}
	m = next(t, changes)
	if m.GetTask().GetId() != task.GetId() || m.GetTask().GetState() != paddockv1.State_STATE_CANCELLED || !m.GetLeft() {
		t.Fatalf("after cancel: %v, want %s CANCELLED with left", m, task.GetId())
	}
}

// TestWatchTasksBadFilter: a bad filter is refused naming the field, as List does.
func TestWatchTasksBadFilter(t *testing.T) {
	ts := startServer(t, fastConfig())
	st, err := ts.tasks.WatchTasks(context.Background(), connect.NewRequest(&paddockv1.WatchTasksRequest{Limit: 5000}))
	if err == nil {
		if st.Receive() {
			t.Fatalf("WatchTasks(limit 5000) sent %v", st.Msg())
		}
		err = st.Err()
	}
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("WatchTasks(limit 5000): err = %v, want InvalidArgument naming limit", err)
	}
}

// TestWatchTasksEndsWhenServerStops: a watch open while the server shuts down ends
// with UNAVAILABLE (watch again elsewhere), not a hang or a silent end.
func TestWatchTasksEndsWhenServerStops(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := sched.New(fastConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	al, cl := listen(t), listen(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Run(ctx, al, cl) }()
	tasks := paddockv1connect.NewTaskServiceClient(http.DefaultClient, "http://"+cl.Addr().String())
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer wcancel()
	stream, err := tasks.WatchTasks(wctx, connect.NewRequest(&paddockv1.WatchTasksRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("no first message: %v", stream.Err())
	}
	stop()
	for stream.Receive() {
	}
	if connect.CodeOf(stream.Err()) != connect.CodeUnavailable {
		t.Fatalf("the watch ended with %v, want UNAVAILABLE (the server is stopping)", stream.Err())
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
