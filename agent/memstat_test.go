package agent

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/paddockvm/paddock/plugins/runner"
)

// memoryOf reads the real /proc: the agent's (here the test's) own RSS, and the RSS of
// the handler processes that run — none before a lazy handler's first call, one after.
func TestMemoryOfCountsRunningHandlers(t *testing.T) {
	th := filepath.Join(t.TempDir(), "testhandler")
	build := exec.Command("go", "build", "-o", th, "github.com/paddockvm/paddock/plugins/handlers/testhandler")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testhandler: %v\n%s", err, out)
	}
	sum, err := runner.SHA256File(th)
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(context.Background(), runner.Config{Lazy: true, Logger: slog.New(slog.DiscardHandler),
		Handlers: []runner.HandlerSpec{{Name: "testhandler", Path: th, SHA256: sum, Types: []runner.TaskType{{Name: "test.echo", Version: "x"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mem := memoryOf(r)
	m := mem()
	if m.AgentRSS <= 0 || m.AgentAnon <= 0 || m.AgentAnon > m.AgentRSS || m.GuestUsed <= 0 || m.HandlersUp != 0 || m.HandlersRSS != 0 {
		t.Fatalf("before any call: %+v, want the agent's RSS and memory in use, no handler", m)
	}
	// An eager runner's handler runs from the start.
	r2, err := runner.New(context.Background(), runner.Config{Logger: slog.New(slog.DiscardHandler),
		Handlers: []runner.HandlerSpec{{Name: "testhandler", Path: th, SHA256: sum}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	m = memoryOf(r2)()
	if m.HandlersUp != 1 || m.HandlersRSS <= 0 {
		t.Fatalf("with one handler up: %+v, want its RSS counted", m)
	}
}
