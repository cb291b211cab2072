package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTaskSubmitPipeline: paddock task submit -f stores a DAG through SubmitPipeline on a
// real server (a file input uploaded, stages reading each other), task get shows the
// upstream stages; a cycle stores nothing and names it; --input name=@task:ID waits on a
// task and an unknown id is refused, naming it; a cancelled upstream fails its
// downstream with the reason.
func TestTaskSubmitPipeline(t *testing.T) {
	url, _, ls := testServer(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data.csv"), []byte("a,b\n1,2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("p.yaml", `stages:
  - name: checksum
    type: test.checksum
    inputs: {in: "@stage:compress/out"}
  - name: compress
    type: test.compress
    inputs: {in: data.csv}
`)
	out, errOut := mustRun(t, "task", "submit", "-f", good, "--server", url, "-q")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "checksum") || !strings.HasSuffix(lines[0], "waiting") ||
		!strings.HasPrefix(lines[1], "compress") || !strings.HasSuffix(lines[1], "queued") {
		t.Fatalf("submit -f printed %q (stderr %q); want checksum waiting, compress queued", out, errOut)
	}
	down, up := strings.Fields(lines[0])[1], strings.Fields(lines[1])[1]
	out, _ = mustRun(t, "task", "get", down, "--server", url)
	for _, want := range []string{"state:     waiting", "input:     in  from @task:" + up + "/out", "upstream stages:", up + "  test.compress  queued"} {
		if !strings.Contains(out, want) {
			t.Errorf("task get %s lacks %q:\n%s", down, want, out)
		}
	}

	cyc := write("cycle.json", `{"stages": [{"name": "a", "type": "x", "inputs": {"in": "@stage:b"}}, {"name": "b", "type": "x", "inputs": {"in": "@stage:a"}}]}`)
	before := countTasks(t, ls)
	_, errOut, code := run(t, "task", "submit", "-f", cyc, "--server", url)
	if code == 0 || !strings.Contains(errOut, "cycle: a -> b -> a") {
		t.Errorf("a cyclic pipeline: exit %d, stderr %q; want an error naming the cycle", code, errOut)
	}
	if after := countTasks(t, ls); after != before {
		t.Errorf("a refused pipeline stored %d tasks", after-before)
	}
	unknownField := write("typo.yaml", "stages:\n  - name: a\n    typ: x\n")
	if _, errOut, code := run(t, "task", "submit", "-f", unknownField, "--server", url); code == 0 || !strings.Contains(errOut, "typ") {
		t.Errorf("a misspelt field: exit %d, stderr %q; want an error naming it", code, errOut)
	}

	_, errOut, code = run(t, "task", "submit", "--type", "x", "--input", "in=@task:0193d1e4-0000-7000-8000-00000000beef", "--server", url)
	if code == 0 || !strings.Contains(errOut, "0193d1e4-0000-7000-8000-00000000beef does not exist") {
		t.Errorf("--input of an unknown task: exit %d, stderr %q; want an error naming it", code, errOut)
	}
	out, _ = mustRun(t, "task", "submit", "--type", "x", "--input", "in=@task:"+up+"/out", "--server", url)
	third := strings.TrimSpace(out)
	mustRun(t, "task", "cancel", up, "--server", url)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ = mustRun(t, "task", "get", third, "--server", url)
		if strings.Contains(out, "state:     failed") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "state:     failed") || !strings.Contains(out, "upstream task "+up+" ended cancelled") {
		t.Fatalf("task get of a task whose upstream was cancelled:\n%s\nwant failed naming the upstream", out)
	}
}
