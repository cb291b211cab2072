package cli

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

// startAgent runs a real paddock-agent process serving handler against the server's
// agent port, until the test ends.
func startAgent(t *testing.T, agentBin, agentAddr, name, handler string) {
	t.Helper()
	c := exec.Command(agentBin, "--server", agentAddr, "--handler", name+"="+handler, "--data-dir", t.TempDir())
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its handlers die with it
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		_ = c.Wait()
		if t.Failed() {
			t.Logf("agent output:\n%s", out.String())
		}
	})
}

// TestTaskLogsThroughAgent: a real agent process runs the real testhandler, whose
// test.log logs through loggers made before and after Serve, the request's logger and
// raw stdout; `paddock task logs` shows those lines with their levels, and the API's
// Logs returns them for attempt 1. Before the fix the lines never left the agent.
func TestTaskLogsThroughAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs a real agent")
	}
	ls := serverWithTestAgents(t, 1)

	out, errOut := mustRun(t, "task", "submit", "--server", ls.URL, "--type", "test.log", "--payload", "zebra", "--wait", "--wait-timeout", "3m")
	if !strings.Contains(out, "state:     succeeded") || strings.Contains(errOut, "warning") {
		t.Fatalf("submit --wait printed:\n%s\n%s", out, errOut)
	}
	id := firstField(t, errOut, "task ")
	logs, _ := mustRun(t, "task", "logs", "--server", ls.URL, id)
	for _, want := range []string{
		"== attempt 1 ==",
		"INFO  early logger with ctx tag=zebra",
		"WARN  late logger with ctx tag=zebra",
		"DEBUG request logger tag=zebra",
		"ERROR plain slog logger tag=zebra",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("task logs lacks %q:\n%s", want, logs)
		}
	}
	tc := paddockv1connect.NewTaskServiceClient(http.DefaultClient, ls.URL)
	r, err := tc.Logs(context.Background(), connect.NewRequest(&paddockv1.LogsRequest{Id: id, Attempt: 1}))
	if err != nil || len(r.Msg.GetAttempts()) != 1 || len(r.Msg.GetAttempts()[0].GetLines()) < 4 {
		t.Fatalf("Logs(attempt 1) = %v, %v; want attempt 1 with its lines", r, err)
	}
	// Follow on an ended task prints and returns; a missing attempt is an error naming it.
	if f, _ := mustRun(t, "task", "logs", "--server", ls.URL, "-f", "--attempt", "1", id); !strings.Contains(f, "early logger") {
		t.Errorf("task logs -f --attempt 1 printed:\n%s", f)
	}
	if _, e, code := run(t, "task", "logs", "--server", ls.URL, "--attempt", "5", id); code == 0 || !strings.Contains(e, "attempt") {
		t.Errorf("task logs --attempt 5: exit %d, stderr %q; want an error naming the attempt", code, e)
	}
}

// TestSubmitUnservedType: a submit of a type no agent and no pool serves prints the
// id at once and a warning saying so, and --wait gives up at --wait-timeout with the
// id and the state instead of waiting silently; task get says why (Explain).
func TestSubmitUnservedType(t *testing.T) {
	_, _, ls := testServer(t)
	start := time.Now()
	out, errOut, code := run(t, "task", "submit", "--server", ls.URL, "--type", "nobody.serves.this", "--wait", "--wait-timeout", "2s")
	if code == 0 {
		t.Fatalf("submit --wait of an unserved type exited 0:\n%s\n%s", out, errOut)
	}
	id := firstField(t, errOut, "task ")
	for _, want := range []string{"no connected agent and no host pool serves type nobody.serves.this", "pool", "still queued"} {
		if !strings.Contains(errOut+out, want) {
			t.Errorf("submit --wait output lacks %q:\nstdout: %s\nstderr: %s", want, out, errOut)
		}
	}
	if el := time.Since(start); el > 2*time.Minute {
		t.Errorf("submit --wait --wait-timeout 2s took %v", el)
	}
	get, _ := mustRun(t, "task", "get", "--server", ls.URL, id)
	if !strings.Contains(get, "why:") || !strings.Contains(get, "nobody.serves.this") {
		t.Errorf("task get of the unserved task:\n%s", get)
	}
}

// serverWithTestAgents starts a real server and n real paddock-agent processes (no
// --id) serving the testhandler, and waits until they are connected.
func serverWithTestAgents(t *testing.T, n int) *localServer {
	t.Helper()
	agent, handler := buildBinaries(t, "cmd/paddock-agent", "plugins/handlers/testhandler")
	_, _, ls := testServer(t)
	for range n {
		startAgent(t, agent, ls.AgentAddr, "testhandler", handler)
	}
	waitAgents(t, ls.URL, n)
	return ls
}

// waitAgents waits up to 2 minutes until n agents are connected.
func waitAgents(t *testing.T, url string, n int) {
	t.Helper()
	cc := paddockv1connect.NewClusterServiceClient(http.DefaultClient, url)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r, err := cc.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
		connected := 0
		if err == nil {
			for _, a := range r.Msg.GetAgents() {
				if a.GetState() == "connected" {
					connected++
				}
			}
		}
		if err == nil && connected >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d agents connected after 2 minutes (err %v), want %d", connected, err, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// firstField returns the word after prefix at the start of a line of s.
func firstField(t *testing.T, s, prefix string) string {
	t.Helper()
	for _, l := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return strings.TrimSuffix(f[0], ":")
			}
		}
	}
	t.Fatalf("no line starting %q in:\n%s", prefix, s)
	return ""
}

// TestTwoAgentsWithoutID: two agents started on one machine without --id both stay
// connected under ids of their own (before, both took the host name and each
// connection replaced the other's session every second).
func TestTwoAgentsWithoutID(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs real agents")
	}
	ls := serverWithTestAgents(t, 2)
	time.Sleep(3 * time.Second) // several heartbeats: a replaced session would show as lost
	out, _ := mustRun(t, "agent", "ls", "--server", ls.URL)
	if n := strings.Count(out, " connected"); n != 2 || strings.Contains(out, " lost") {
		t.Fatalf("want 2 connected agents and none lost:\n%s", out)
	}
}

// syncBuffer is a strings.Builder safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestTaskLogsFollowLive: a real agent runs the real testhandler's test.logwait, which
// logs a line and then blocks until the test creates a file. `paddock task logs -f`
// prints that line while the task still runs (the agent sent it in a LogChunk), the API
// shows it for the running task, and once the task is released -f prints the last line
// and returns; every line is in the stored log exactly once (the report does not repeat
// what the chunks carried).
func TestTaskLogsFollowLive(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs a real agent")
	}
	ls := serverWithTestAgents(t, 1)
	release := filepath.Join(t.TempDir(), "release")
	sub, _ := mustRun(t, "task", "submit", "--server", ls.URL, "--type", "test.logwait", "--payload", release)
	id := strings.TrimSpace(sub)

	var out, errs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Execute(context.Background(), []string{"task", "logs", "--server", ls.URL, "-f", id}, &out, &errs)
	}()

	tc := paddockv1connect.NewTaskServiceClient(http.DefaultClient, ls.URL)
	waiting := "INFO  waiting for " + release
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(out.String(), waiting) {
		select {
		case code := <-done:
			t.Fatalf("task logs -f returned (exit %d) before the task ended:\n%s\n%s", code, out.String(), errs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("task logs -f printed no %q in 3 minutes:\n%s\n%s", waiting, out.String(), errs.String())
		}
	}
	// The handler is blocked until the file exists: the task runs, and the API has the line.
	g, err := tc.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if st := g.Msg.GetTask().GetState(); st != paddockv1.State_STATE_RUNNING && st != paddockv1.State_STATE_LEASED {
		t.Fatalf("task is %v while its handler waits; want running", st)
	}
	r, err := tc.Logs(context.Background(), connect.NewRequest(&paddockv1.LogsRequest{Id: id}))
	if err != nil || len(r.Msg.GetAttempts()) != 1 || r.Msg.GetState() == paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("Logs of the running task = %v, %v; want its running attempt", r, err)
	}

	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("task logs -f exited %d:\n%s", code, errs.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("task logs -f still following 3 minutes after the release:\n%s", out.String())
	}
	got := out.String()
	if strings.Count(got, "waiting for "+release) != 1 || strings.Count(got, "INFO  released") != 1 || strings.Count(got, "== attempt 1 ==") != 1 {
		t.Errorf("task logs -f printed (want the header, the waiting line and the released line once each):\n%s", got)
	}
	r, err = tc.Logs(context.Background(), connect.NewRequest(&paddockv1.LogsRequest{Id: id}))
	if err != nil || len(r.Msg.GetAttempts()) != 1 {
		t.Fatalf("Logs = %v, %v", r, err)
	}
	var texts []string
	for _, l := range r.Msg.GetAttempts()[0].GetLines() {
		texts = append(texts, l.GetText())
	}
	if len(texts) != 2 || texts[0] != "waiting for "+release || texts[1] != "released" {
		t.Errorf("stored log = %q; want the two lines once each, in order", texts)
	}
}

// TestSubmitScheduleTimeoutFlag: --schedule-timeout refuses a value that is not a
// duration or is negative, naming the flag; a served task's submit then carries it.
func TestSubmitScheduleTimeoutFlag(t *testing.T) {
	for _, v := range []string{"banana", "-5s"} {
		_, errOut, code := run(t, "task", "submit", "--server", "http://127.0.0.1:1", "--type", "x", "--schedule-timeout", v)
		if code == 0 || !strings.Contains(errOut, "--schedule-timeout") {
			t.Errorf("--schedule-timeout %s: exit %d, stderr %q; want an error naming the flag", v, code, errOut)
		}
	}
	_, _, ls := testServer(t)
	out, _ := mustRun(t, "task", "submit", "--server", ls.URL, "--type", "nobody.serves.this", "--schedule-timeout", "90s")
	get, _ := mustRun(t, "task", "get", "--server", ls.URL, "--json", strings.TrimSpace(out))
	if !strings.Contains(strings.Join(strings.Fields(get), ""), `"scheduleToStartTimeoutMs":"90000"`) {
		t.Errorf("task get --json of a task submitted with --schedule-timeout 90s:\n%s", get)
	}
}
