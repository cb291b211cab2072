package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHandlersDocLoop follows docs/handlers.md as an author would: the example
// handler, copied from the page, built in a module of its own with the page's
// `replace` line, run by a real paddock-agent against a real server without VMs (the
// inner loop of section 4); the task's output and its log line come back through the
// CLI.
func TestHandlersDocLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds an author's module and runs a real agent")
	}
	doc, err := os.ReadFile("../../docs/handlers.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(doc), "## 1. Write it")
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindStringSubmatch(after)
	if m == nil {
		t.Fatal("docs/handlers.md: no Go example after \"## 1. Write it\"")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	mod := t.TempDir()
	goMod := "module example.com/wordcount\n\ngo 1.26\n\nrequire github.com/paddockvm/paddock v0.0.0\n\nreplace github.com/paddockvm/paddock => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{"main.go": []byte(m[1]), "go.mod": []byte(goMod), "go.sum": sum} {
		if err := os.WriteFile(filepath.Join(mod, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	handler := filepath.Join(mod, "wordcount")
	// As the page builds it, less -trimpath (which would recompile every dependency here).
	build := exec.Command("go", "build", "-mod=mod", "-ldflags", "-s -w", "-o", handler, ".")
	build.Dir = mod
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the docs example as an author's module: %v\n%s", err, out)
	}
	agent := buildBinary(t, "cmd/paddock-agent")
	_, _, ls := testServer(t)
	startAgent(t, agent, ls.AgentAddr, "wordcount", handler)
	waitAgents(t, ls.URL, 1)

	in := filepath.Join(t.TempDir(), "a.txt")
	if err := os.WriteFile(in, []byte("one two three\nfour\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut := mustRun(t, "task", "submit", "--server", ls.URL, "--type", "wordcount", "--input", "a="+in, "--wait", "--json")
	var task struct {
		ID     string `json:"id"`
		Output []byte `json:"output"`
	}
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatalf("submit --json printed %q: %v\n%s", out, err, errOut)
	}
	if string(task.Output) != `{"a":4}` {
		t.Errorf("wordcount output %q, want {\"a\":4}", task.Output)
	}
	logs, _ := mustRun(t, "task", "logs", "--server", ls.URL, task.ID)
	if !strings.Contains(logs, "INFO  counted words inputs=1") {
		t.Errorf("task logs:\n%s\nwant the example's \"counted words\" line", logs)
	}
}
