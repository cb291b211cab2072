// Command testagent is an agent for the scheduler's integration tests, not for users:
// it runs handler binaries through plugins/runner and keeps a session with the server
// over TCP (agent/session), optionally recording every report and its ack as JSON lines
// so a test can replay them. (cmd/paddock-agent is the real agent, for guests.)
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/plugins/runner"
)

type handlers []string

func (h *handlers) String() string     { return strings.Join(*h, ",") }
func (h *handlers) Set(v string) error { *h = append(*h, v); return nil }

// opts are the concurrency allocator's settings.
type opts struct {
	total     int
	tolerable map[string]time.Duration
	defTol    time.Duration
	min       map[string]int
	blobEcho  bool
	dataDir   string
	token     string
	memory    int64
}

type tolFlag map[string]time.Duration

func (f tolFlag) String() string { return fmt.Sprint(map[string]time.Duration(f)) }
func (f tolFlag) Set(v string) error {
	typ, d, ok := strings.Cut(v, "=")
	dur, err := time.ParseDuration(d)
	if !ok || err != nil {
		return fmt.Errorf("want type=duration, e.g. test.sleep=50ms")
	}
	f[typ] = dur
	return nil
}

type minFlag map[string]int

func (f minFlag) String() string { return fmt.Sprint(map[string]int(f)) }
func (f minFlag) Set(v string) error {
	typ, n, ok := strings.Cut(v, "=")
	k, err := strconv.Atoi(n)
	if !ok || err != nil {
		return fmt.Errorf("want type=n, e.g. test.sleep=2")
	}
	f[typ] = k
	return nil
}

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
	o := opts{tolerable: map[string]time.Duration{}, min: map[string]int{}}
	flag.IntVar(&o.total, "total", 0, "total slots shared among the types (0: slots x types)")
	flag.Var(tolFlag(o.tolerable), "tolerable", "type=duration: a type's tolerable queuing delay (repeatable)")
	flag.DurationVar(&o.defTol, "default-tolerable", 0, "tolerable queuing delay of the other types (0: 1s)")
	flag.Var(minFlag(o.min), "min", "type=n: a type's minimum slots (repeatable)")
	flag.BoolVar(&o.blobEcho, "blobecho", false, "also serve test.blobecho (in process): write input file \"in\", upper-cased, as output file \"out\"")
	flag.StringVar(&o.dataDir, "data-dir", "", "where DATA_PATH_STREAM tasks' files go (default: the session's)")
	flag.StringVar(&o.token, "token", "", "agent token to send (server.agent_token)")
	flag.Int64Var(&o.memory, "memory", 0, "memory the agent offers, in bytes (accounting tests)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the agent process to this file (written when it exits on SIGTERM)")
	flag.Parse()
	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testagent:", err)
			os.Exit(1)
		}
		defer stop()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(*server, *id, *slots, *record, hs, o, log); err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.Exit(1)
	}
}

// startCPUProfile starts a CPU profile written to path; stop ends it.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: starting: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func run(server, id string, slots int, record string, hs handlers, o opts, log *slog.Logger) error {
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
	cfg := session.Config{AgentID: id, Host: "testhost", Version: "test", Dial: session.TCPDialer(server), DefaultSlots: slots, Logger: log,
		TotalSlots: o.total, TolerableDelay: o.tolerable, DefaultTolerableDelay: o.defTol, MinSlots: o.min, DataDir: o.dataDir,
		Token: o.token, Capacity: session.Capacity{MemoryBytes: o.memory}}
	var ex session.Executor = session.RunnerExecutor(r)
	if o.blobEcho {
		ex = withBlobEcho{ex}
	}
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

// withBlobEcho adds the type test.blobecho to an executor: it reads its input file
// "in" (which the session fetched with ReadBlob or found staged) and writes it,
// upper-cased, as the output file "out" (which the session stores with WriteBlob or the
// host collects).
type withBlobEcho struct{ session.Executor }

func (w withBlobEcho) Types() []session.TaskType {
	return append(w.Executor.Types(), session.TaskType{Name: "test.blobecho", Version: "1"})
}

func (w withBlobEcho) Execute(ctx context.Context, t session.Task) session.Result {
	if t.Type != "test.blobecho" {
		return w.Executor.Execute(ctx, t)
	}
	in, ok := t.InputFiles["in"]
	if !ok {
		return session.Result{Error: "test.blobecho: no input file \"in\": submit the task with input_blobs {\"in\": ...}"}
	}
	b, err := os.ReadFile(in.Path)
	if err != nil {
		return session.Result{Error: err.Error(), Retryable: true}
	}
	out := bytes.ToUpper(b)
	if err := os.WriteFile(filepath.Join(t.OutputDir, "out"), out, 0o644); err != nil {
		return session.Result{Error: err.Error(), Retryable: true}
	}
	sum := sha256.Sum256(out)
	return session.Result{Output: []byte("ok"), OutputFiles: map[string]session.OutputFile{
		"out": {Size: int64(len(out)), Digest: "sha256:" + hex.EncodeToString(sum[:])}}}
}

func ignoreCancel(err error) error {
	if err == context.Canceled {
		return nil
	}
	return err
}
