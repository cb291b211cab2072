package cli

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTaskGetShowsFailureKind: a task whose handler process crashes (a real agent
// process running the real testhandler, against a real server) shows its failure kind
// in `paddock task get`, per attempt and for the task, and in its JSON.
// startTestAgent runs a real paddock-agent process with the testhandler against ls,
// killed (with its handlers) when the test ends.
func startTestAgent(t *testing.T, ls *localServer, id string) {
	t.Helper()
	agent, handler := buildBinaries(t, "cmd/paddock-agent", "plugins/handlers/testhandler")
	cmd := exec.Command(agent, "--server", ls.AgentAddr, "--id", id, "--handler", "testhandler="+handler, "--data-dir", filepath.Join(t.TempDir(), "data"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its handlers die with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
}

func TestTaskGetShowsFailureKind(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs a real agent")
	}
	url, _, ls := testServer(t)
	startTestAgent(t, ls, "kinds")

	out, errOut, code := run(t, "task", "submit", "--server", url, "--type", "test.crash", "--max-attempts", "1", "--wait")
	if code == 0 {
		t.Fatalf("task submit --wait of a crashing task exited 0:\n%s\n%s", out, errOut)
	}
	m := regexp.MustCompile(`(?m)^id:\s+(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("task submit --wait printed no id:\n%s\n%s", out, errOut)
	}
	id := m[1]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for ctx.Err() == nil && !strings.Contains(out, "state:     dead") {
		time.Sleep(200 * time.Millisecond)
		out, _ = mustRun(t, "task", "get", "--server", url, id)
	}
	for _, want := range []string{"state:     dead", "failure:   crashed", "attempt 1: agent kinds lease "} {
		if !strings.Contains(out, want) {
			t.Fatalf("task get lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^attempt 1: .* dead \d+ms \(crashed\) `).MatchString(out) {
		t.Fatalf("task get: attempt 1 does not show (crashed):\n%s", out)
	}
	js, _ := mustRun(t, "task", "get", "--server", url, "--json", id)
	var got struct {
		FailureKind string `json:"failureKind"`
		Attempts    []struct {
			FailureKind string `json:"failureKind"`
		} `json:"attempts"`
	}
	if err := json.Unmarshal([]byte(js), &got); err != nil {
		t.Fatalf("task get --json: %v\n%s", err, js)
	}
	if got.FailureKind != "FAILURE_KIND_CRASHED" || len(got.Attempts) != 1 || got.Attempts[0].FailureKind != "FAILURE_KIND_CRASHED" {
		t.Fatalf("task get --json: failure kinds %+v, want FAILURE_KIND_CRASHED on the task and its attempt:\n%s", got, js)
	}
}
