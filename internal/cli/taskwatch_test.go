package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/internal/testutil"
	"github.com/paddockvm/paddock/sched"
)

// watching runs paddock args (a task ls --watch) until the returned stop is called;
// stop cancels it as Ctrl-C does and returns its exit code and stderr.
func watching(t *testing.T, args ...string) (out *testutil.SyncBuffer, stop func() (int, string)) {
	t.Helper()
	out, errOut := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- Execute(ctx, args, out, errOut) }()
	t.Cleanup(cancel)
	return out, func() (int, string) {
		cancel()
		select {
		case c := <-code:
			return c, errOut.String()
		case <-time.After(time.Minute):
			t.Fatalf("paddock %s still running a minute after Ctrl-C", strings.Join(args, " "))
			return 0, ""
		}
	}
}

// waitOutput waits until out holds want.
func waitOutput(t *testing.T, out *testutil.SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the watch's output after 2 minutes:\n%s", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTaskLsWatch runs task ls --watch against a real server (SQLite, client token):
// the first list, a submit and a cancel arrive live, the filters hold, and Ctrl-C ends
// it with exit 0; as JSON lines and as a table.
func TestTaskLsWatch(t *testing.T) {
	const tok = "watch-token"
	ls, err := startLocalServer(context.Background(), t.TempDir(), sched.Config{Token: tok, AgentToken: "agent-token",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Stop)
	tc, _ := clientsAt(http.DefaultClient, ls.URL, tok)
	ctx := context.Background()
	submit := func(typ string) string {
		r, err := tc.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: typ}}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.GetTask().GetId()
	}
	first := submit("w.x")

	t.Run("json", func(t *testing.T) {
		out, stop := watching(t, "task", "ls", "--watch", "--json", "--server", ls.URL, "--token", tok, "--state", "queued", "--type", "w.x")
		waitOutput(t, out, first)
		second, other := submit("w.x"), submit("w.other")
		waitOutput(t, out, second)
		if _, err := tc.Cancel(ctx, connect.NewRequest(&paddockv1.CancelRequest{Id: first})); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, out, `"left":true`)
		if code, errOut := stop(); code != 0 {
			t.Fatalf("exit %d after Ctrl-C; stderr %q", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		var msgs []*paddockv1.WatchTasksResponse
		for _, l := range lines {
			var m paddockv1.WatchTasksResponse
			if !json.Valid([]byte(l)) {
				t.Fatalf("line %q is not one JSON object", l)
			}
			if err := protojson.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			msgs = append(msgs, &m)
		}
		if len(msgs) != 3 {
			t.Fatalf("%d lines, want 3 (the list, the submit, the cancel):\n%s", len(msgs), out.String())
		}
		if s := msgs[0].GetSnapshot(); len(s) != 1 || s[0].GetId() != first {
			t.Errorf("first line %v, want the list of %s", msgs[0], first)
		}
		if m := msgs[1]; m.GetTask().GetId() != second || m.GetTask().GetState() != paddockv1.State_STATE_QUEUED {
			t.Errorf("second line %v, want %s queued", m, second)
		}
		if m := msgs[2]; m.GetTask().GetId() != first || m.GetTask().GetState() != paddockv1.State_STATE_CANCELLED || !m.GetLeft() {
			t.Errorf("third line %v, want %s cancelled and left", m, first)
		}
		if strings.Contains(out.String(), other) {
			t.Errorf("the watch of type w.x showed %s of type w.other", other)
		}
	})

	t.Run("table", func(t *testing.T) {
		out, stop := watching(t, "task", "ls", "--watch", "--server", ls.URL, "--token", tok, "--type", "w.x")
		waitOutput(t, out, "ID ")
		id := submit("w.x")
		waitOutput(t, out, id)
		if code, errOut := stop(); code != 0 {
			t.Fatalf("exit %d after Ctrl-C; stderr %q", code, errOut)
		}
		if !strings.Contains(out.String(), first) || !strings.Contains(out.String(), "cancelled") {
			t.Errorf("the table lacks the cancelled %s:\n%s", first, out.String())
		}
	})

	t.Run("bad token", func(t *testing.T) {
		_, errOut, code := run(t, "task", "ls", "--watch", "--server", ls.URL, "--token", "wrong")
		if code == 0 || !strings.Contains(strings.ToLower(errOut), "unauthenticated") {
			t.Fatalf("exit %d, stderr %q; want a refusal", code, errOut)
		}
	})
}
