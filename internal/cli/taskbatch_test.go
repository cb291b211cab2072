package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
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

// TestTaskRetry: paddock task retry resubmits a cancelled task's spec as a new task and
// refuses a task that is still queued.
func TestTaskRetry(t *testing.T) {
	url, _, ls := testServer(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "one.jsonl")
	if err := os.WriteFile(f, []byte(`{"type": "nobody.serves", "payload": "aGk="}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ := mustRun(t, "task", "submit-batch", "--server", url, f)
	id := strings.TrimSpace(out)
	if _, errOut, code := run(t, "task", "retry", "--server", url, id); code == 0 || !strings.Contains(errOut, "retrying task "+id) {
		t.Errorf("retry of a queued task: exit %d, stderr %q; want a refusal", code, errOut)
	}
	mustRun(t, "task", "cancel", "--server", url, id)
	out, errOut := mustRun(t, "task", "retry", "--server", url, id)
	nid := strings.TrimSpace(out)
	if nid == "" || nid == id || !strings.Contains(errOut, "retried as "+nid) {
		t.Fatalf("retry printed %q (stderr %q); want a new id", out, errOut)
	}
	nt, err := ls.Server.Store().Get(context.Background(), nid)
	if err != nil || nt.Type != "nobody.serves" || string(nt.Payload) != "hi" || nt.State != store.Queued {
		t.Fatalf("the retried task: %+v, %v; want a queued copy of the spec", nt, err)
	}
}

// TestSubmitFromStdin: --payload-file - and --input name=- read stdin (the input is
// spooled, so it can go inline or up as a blob); both at once is refused.
func TestSubmitFromStdin(t *testing.T) {
	url, _, ls := testServer(t)
	old := stdin
	t.Cleanup(func() { stdin = old })

	stdin = strings.NewReader("payload from stdin")
	out, _ := mustRun(t, "task", "submit", "--server", url, "--type", "t", "--payload-file", "-")
	id := regexpID.FindString(out)
	if tk, err := ls.Server.Store().Get(context.Background(), id); err != nil || string(tk.Payload) != "payload from stdin" {
		t.Fatalf("--payload-file -: task %q: %+v, %v", id, tk, err)
	}

	stdin = strings.NewReader("input from stdin")
	out, _ = mustRun(t, "task", "submit", "--server", url, "--type", "t", "--input", "in.txt=-")
	id = regexpID.FindString(out)
	if tk, err := ls.Server.Store().Get(context.Background(), id); err != nil || string(tk.Inputs["in.txt"]) != "input from stdin" {
		t.Fatalf("--input in.txt=-: task %q: inputs %v, %v", id, tk.Inputs, err)
	}

	if _, errOut, code := run(t, "task", "submit", "--server", url, "--type", "t", "--payload-file", "-", "--input", "a=-"); code != 2 || !strings.Contains(errOut, "only one of them can read stdin") {
		t.Errorf("two readers of stdin: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := run(t, "task", "submit", "--server", url, "--type", "t", "--input", "a=-", "--input", "b=-"); code != 2 || !strings.Contains(errOut, "only one input can read stdin") {
		t.Errorf("two inputs from stdin: exit %d, stderr %q", code, errOut)
	}
}

var regexpID = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// TestJSONOnListsAndCancel: vm ls, host ls and task cancel print JSON with --json.
func TestJSONOnListsAndCancel(t *testing.T) {
	url, _, _ := testServer(t)
	for _, args := range [][]string{{"vm", "ls"}, {"host", "ls"}} {
		out, _ := mustRun(t, append(args, "--server", url, "--json")...)
		if !json.Valid([]byte(out)) {
			t.Errorf("paddock %v --json printed %q, not JSON", args, out)
		}
	}
	stdinWas := stdin
	t.Cleanup(func() { stdin = stdinWas })
	stdin = strings.NewReader(`{"type": "nobody.serves"}` + "\n")
	out, _ := mustRun(t, "task", "submit-batch", "--server", url, "-")
	out, _ = mustRun(t, "task", "cancel", "--server", url, "--json", strings.TrimSpace(out))
	var got struct {
		Task struct{ State string } `json:"task"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Task.State != "STATE_CANCELLED" {
		t.Errorf("task cancel --json printed %q (%v); want the cancelled task", out, err)
	}
}
