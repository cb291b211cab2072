package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/sched/store"
)

// TestTaskSubmitBatch: paddock task submit-batch stores every line's task through
// SubmitBatch on a real server, in order, in chunks; a bad line stores nothing of its
// chunk and names the line.
func TestTaskSubmitBatch(t *testing.T) {
	url, _, ls := testServer(t)
	dir := t.TempDir()
	var b strings.Builder
	for i := range 7 {
		if i == 3 {
			b.WriteString("\n") // blank lines are skipped
		}
		b.WriteString(`{"type": "test.echo", "payload": "eA==", "priority": ` + string(rune('0'+i)) + "}\n")
	}
	good := filepath.Join(dir, "good.jsonl")
	if err := os.WriteFile(good, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut := mustRun(t, "task", "submit-batch", "--server", url, "--chunk", "3", good)
	ids := strings.Fields(out)
	if len(ids) != 7 || !strings.Contains(errOut, "submitted 7 tasks") {
		t.Fatalf("submit-batch printed %d ids (stderr %q); want 7", len(ids), errOut)
	}
	for i, id := range ids {
		tk, err := ls.Server.Store().Get(context.Background(), id)
		if err != nil || tk.Type != "test.echo" || tk.Priority != i || tk.State != store.Queued {
			t.Errorf("task %d (%s): %+v, %v; want a queued test.echo of priority %d", i, id, tk, err, i)
		}
	}

	// Line 2 lacks a type: the server refuses the chunk, naming the line; nothing of it
	// is stored.
	bad := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"type": "test.echo"}`+"\n"+`{"payload": "eA=="}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := countTasks(t, ls)
	_, errOut, code := run(t, "task", "submit-batch", "--server", url, bad)
	if code == 0 || !strings.Contains(errOut, "line 2") || !strings.Contains(errOut, "tasks[1].type") {
		t.Errorf("a spec without a type: exit %d, stderr %q; want an error naming line 2 and tasks[1].type", code, errOut)
	}
	if after := countTasks(t, ls); after != before {
		t.Errorf("a refused batch stored %d tasks", after-before)
	}
	// Not JSON at all.
	if err := os.WriteFile(bad, []byte("type=test.echo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, "task", "submit-batch", "--server", url, bad); code == 0 || !strings.Contains(errOut, "line 1: not a task spec") {
		t.Errorf("a line that is not JSON: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := run(t, "task", "submit-batch", "--server", url, "--chunk", "0", good); code != 2 || !strings.Contains(errOut, "--chunk") {
		t.Errorf("--chunk 0: exit %d, stderr %q; want a usage error", code, errOut)
	}
}

func countTasks(t *testing.T, ls *localServer) int {
	t.Helper()
	ts, _, err := ls.Server.Store().List(context.Background(), store.Filter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(ts)
}
