// Command testagent is an agent for the scheduler's integration tests, not for users:
// it runs handler binaries through plugins/runner and keeps a session with the server
// over TCP (agent/session), optionally recording every report and its ack as JSON lines
// so a test can replay them. (cmd/paddock-agent is the real agent, for guests.)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/plugins/runner"
)

type handlers []string

func (h *handlers) String() string     { return strings.Join(*h, ",") }
func (h *handlers) Set(v string) error { *h = append(*h, v); return nil }

// Record is one line of the -record file.
type Record struct {
	Report  json.RawMessage `json:"report"`
	Outcome string          `json:"outcome"`
}

func main() {
	var hs handlers
	server := flag.String("server", "", "server agent address host:port")
	id := flag.String("id", "", "agent id")
	slots := flag.Int("slots", 4, "slots per task type")
	record := flag.String("record", "", "append every report and its ack to this file (JSON lines)")
	flag.Var(&hs, "handler", "name=path of a handler binary (repeatable)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(*server, *id, *slots, *record, hs, log); err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.Exit(1)
	}
}

func run(server, id string, slots int, record string, hs handlers, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var specs []runner.HandlerSpec
	for _, h := range hs {
		name, path, ok := strings.Cut(h, "=")
		if !ok {
			return fmt.Errorf("-handler %q: want name=path", h)
		}
		sum, err := runner.SHA256File(path)
		if err != nil {
			return err
		}
		specs = append(specs, runner.HandlerSpec{Name: name, Path: path, SHA256: sum})
	}
	r, err := runner.New(ctx, runner.Config{Handlers: specs, Logger: log})
	if err != nil {
		return err
	}
	defer r.Close()
	cfg := session.Config{AgentID: id, Host: "testhost", Version: "test", Dial: session.TCPDialer(server), DefaultSlots: slots, Logger: log}
	ex := session.RunnerExecutor(r)
	cfg.Slots = map[string]int{}
	for _, t := range ex.Types() {
		cfg.Slots[t.Name] = slots
	}
	if record != "" {
		f, err := os.OpenFile(record, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		var mu sync.Mutex
		cfg.OnReport = func(rep *agentv1.Report, ack *agentv1.ReportAck) {
			b, _ := protojson.Marshal(rep)
			line, _ := json.Marshal(Record{Report: b, Outcome: ack.GetOutcome().String()})
			mu.Lock()
			f.Write(append(line, '\n'))
			mu.Unlock()
		}
	}
	s, err := session.New(cfg, ex)
	if err != nil {
		return err
	}
	fmt.Println("TESTAGENT READY")
	return ignoreCancel(s.Run(ctx))
}

func ignoreCancel(err error) error {
	if err == context.Canceled {
		return nil
	}
	return err
}
