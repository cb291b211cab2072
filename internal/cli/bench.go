package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/plugins/runner"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

func init() { addCommand(80, newBenchCmd) }

// benchOpts are paddock bench's flags.
type benchOpts struct {
	tasks, agents, submitters, idle int
	batch                           int // --batch: tasks per SubmitBatch call (1: Submit)
	agentBin, handlerBin, dataDir   string
	inputSize                       string // --input-size: the data path bench
	cpuProfile                      string // --cpuprofile (hidden): profile the server during the durable run
	tasksSet                        bool   // --tasks was given
}

func newBenchCmd(app *App) *cobra.Command {
	var o benchOpts
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure durable tasks per second end to end beside the raw plugin call rate",
		Long: `Measure Paddock's task path on this machine, and beside it, in the same run, the raw
limit it is compared against:

  raw      test.echo calls through the plugin boundary (plugins/runner and the real
           testhandler subprocess), 1 and 16 in flight;
  durable  no-op test.echo tasks end to end: submitted over the client API to a server
           on a fresh SQLite file (WAL), dispatched to real paddock-agent processes over
           TCP, run in the real handler, reported, checksummed and archived.

It reports tasks/s, the ratio to the raw rate, and submit-to-handler-start latency p50
and p99 both under the full backlog and for one task at a time. Binaries default to
the ones 'make build' puts beside paddock (bin/paddock-agent, bin/handlers/testhandler).

With --input-size SIZE (e.g. 1MiB, 64MiB, 1GiB) it measures the data path instead, one
task at a time (--tasks, default 3), each round in the same run:

  raw      a fresh blob of SIZE uploaded and downloaded through the blob HTTP API of
           the same server (PUT, then GET), bytes/s over both;
  task     a checksum task with a fresh blob input of SIZE, bytes/s from the start of
           the upload (as paddock task submit --input does it) to the task's success:
           dispatched to a TCP paddock-agent, which fetches the input over its server
           connection, and the checksum handler (default bin/handlers/checksum) reads
           all of it (its sha256 is checked).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.tasksSet = cmd.Flags().Changed("tasks")
			if err := o.resolve(); err != nil {
				return err
			}
			if o.inputSize != "" {
				return runInputBench(cmd.Context(), app, o)
			}
			return runBench(cmd.Context(), app, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.tasks, "tasks", 2000, "durable tasks to run (and raw calls to make)")
	f.IntVar(&o.agents, "agents", 2, "agent processes")
	f.IntVar(&o.submitters, "submitters", 16, "concurrent submitting clients")
	f.IntVar(&o.batch, "batch", 1, "tasks per submit call: above 1 each submitter sends SubmitBatch calls of this many tasks (one durable write each)")
	f.IntVar(&o.idle, "idle", 100, "tasks run one at a time for the unloaded latency")
	f.StringVar(&o.agentBin, "agent", "", "paddock-agent binary (default: beside paddock, then $PATH)")
	f.StringVar(&o.handlerBin, "handler", "", "handler binary (default: handlers/testhandler beside paddock; with --input-size handlers/checksum)")
	f.StringVar(&o.dataDir, "bench-dir", "", "directory for the server's SQLite file (default: a temporary directory, removed after)")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the server) during the durable run to this file")
	_ = f.MarkHidden("cpuprofile")
	f.StringVar(&o.inputSize, "input-size", "", "measure the data path: checksum tasks with one blob input of this size (e.g. 64MiB) beside the raw blob upload+download rate")
	return cmd
}

// handlerName is the handler the bench runs: checksum for --input-size, else testhandler.
func (o *benchOpts) handlerName() string {
	if o.inputSize != "" {
		return "checksum"
	}
	return "testhandler"
}

func (o *benchOpts) resolve() error {
	switch {
	case o.tasks < 1:
		return usageError{fmt.Errorf("--tasks %d: want at least 1", o.tasks)}
	case o.agents < 1:
		return usageError{fmt.Errorf("--agents %d: want at least 1", o.agents)}
	case o.submitters < 1:
		return usageError{fmt.Errorf("--submitters %d: want at least 1", o.submitters)}
	case o.batch < 1 || o.batch > sched.MaxBatchTasks:
		return usageError{fmt.Errorf("--batch %d: want 1 to %d", o.batch, sched.MaxBatchTasks)}
	case o.idle < 0:
		return usageError{fmt.Errorf("--idle %d: want 0 or more", o.idle)}
	}
	if o.inputSize != "" {
		n, err := parseSize(o.inputSize)
		if err != nil || n < 1 {
			return usageError{fmt.Errorf("--input-size %q: want a size of at least 1 byte, e.g. 1MiB, 64MiB or 1GiB", o.inputSize)}
		}
		if !o.tasksSet {
			o.tasks = 3
		}
	}
	self, _ := os.Executable()
	dir := filepath.Dir(self)
	if o.agentBin == "" {
		o.agentBin = filepath.Join(dir, "paddock-agent")
		if _, err := os.Stat(o.agentBin); err != nil {
			if p, err := exec.LookPath("paddock-agent"); err == nil {
				o.agentBin = p
			}
		}
	}
	if o.handlerBin == "" {
		o.handlerBin = filepath.Join(dir, "handlers", o.handlerName())
	}
	for flag, p := range map[string]string{"--agent": o.agentBin, "--handler": o.handlerBin} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%s %s: not an executable file: run `make build`, or name the binary with %s", flag, p, flag)
		}
	}
	return nil
}

// benchResult is one line of the report.
type benchResult struct {
	name, value, note string
}

func runBench(ctx context.Context, app *App, o benchOpts) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	fmt.Fprintf(app.Err, "bench: raw plugin calls (%d, testhandler %s)…\n", o.tasks, o.handlerBin)
	raw1, err := rawRate(ctx, o.handlerBin, min(o.tasks, 2000), 1, quiet)
	if err != nil {
		return err
	}
	raw16, err := rawRate(ctx, o.handlerBin, o.tasks, 16, quiet)
	if err != nil {
		return err
	}

	dir := o.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "paddock-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	ls, err := startLocalServer(ctx, dir, sched.Config{Dev: true, Logger: quiet})
	if err != nil {
		return err
	}
	defer ls.Stop()
	srv := ls.Server
	agents, err := startBenchAgents(ls.ctx, o, ls.AgentAddr, dir)
	if err != nil {
		return err
	}
	defer stopBenchAgents(agents)
	if err := waitBenchAgents(app, srv, o.agents, dir); err != nil {
		return err
	}
	client := paddockv1connect.NewTaskServiceClient(http.DefaultClient, ls.URL)

	fmt.Fprintf(app.Err, "bench: %d durable tasks, %d submitters…\n", o.tasks, o.submitters)
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	start := time.Now()
	ids, err := benchSubmit(ctx, client, o.tasks, o.submitters, o.batch)
	if err != nil {
		stopProfile()
		return err
	}
	if err := waitDrained(ctx, srv.Store(), ids[len(ids)-1]); err != nil {
		stopProfile()
		return err
	}
	elapsed := time.Since(start)
	stopProfile()
	if err := waitTerminal(ctx, srv.Store(), ids); err != nil { // each succeeded
		return err
	}
	loaded, err := startLatencies(ctx, srv.Store(), ids)
	if err != nil {
		return err
	}
	var idle []time.Duration
	for i := 0; i < o.idle; i++ {
		one, err := benchSubmit(ctx, client, 1, 1, 1)
		if err != nil {
			return err
		}
		if err := waitTerminal(ctx, srv.Store(), one); err != nil {
			return err
		}
		l, err := startLatencies(ctx, srv.Store(), one)
		if err != nil {
			return err
		}
		idle = append(idle, l...)
	}
	rate := float64(o.tasks) / elapsed.Seconds()
	res := []benchResult{
		{"raw plugin calls/s, 1 in flight", fmt.Sprintf("%.0f", raw1), "runner → testhandler test.echo"},
		{"raw plugin calls/s, 16 in flight", fmt.Sprintf("%.0f", raw16), "the limit durable tasks are compared against"},
		{"durable tasks/s", fmt.Sprintf("%.0f", rate), fmt.Sprintf("%d tasks, %d agents, batches of %d, %.1fs; %.1f%% of raw (16 in flight)", o.tasks, o.agents, o.batch, elapsed.Seconds(), 100*rate/raw16)},
		{"submit→handler start p50, loaded", ms(pct(loaded, 0.50)), "whole backlog submitted at once: mostly queue wait"},
		{"submit→handler start p99, loaded", ms(pct(loaded, 0.99)), ""},
	}
	if len(idle) > 0 {
		res = append(res,
			benchResult{"submit→handler start p50, one at a time", ms(pct(idle, 0.50)), fmt.Sprintf("%d tasks", len(idle))},
			benchResult{"submit→handler start p99, one at a time", ms(pct(idle, 0.99)), ""})
	}
	return printBenchResults(app, res)
}

// printBenchResults prints the report as a table.
func printBenchResults(app *App, res []benchResult) error {
	tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEASURE\tVALUE\tNOTE")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.name, r.value, r.note)
	}
	return tw.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// pct returns the q quantile of ds (sorted in place).
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[int(q*float64(len(ds)-1))]
}

// rawRate makes calls test.echo calls through a runner with inflight at once.
func rawRate(ctx context.Context, handler string, calls, inflight int, log *slog.Logger) (float64, error) {
	sum, err := runner.SHA256File(handler)
	if err != nil {
		return 0, err
	}
	r, err := runner.New(ctx, runner.Config{Handlers: []runner.HandlerSpec{{Name: "testhandler", Path: handler, SHA256: sum}}, Logger: log})
	if err != nil {
		return 0, fmt.Errorf("bench: starting %s: %w", handler, err)
	}
	defer r.Close()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	start := time.Now()
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < calls; i += inflight {
				if res := r.Execute(ctx, runner.Task{ID: fmt.Sprint(i), Type: "test.echo", Payload: []byte("x")}); !res.OK() {
					mu.Lock()
					first = errors.Join(first, fmt.Errorf("raw call %d: %s", i, res.Error))
					mu.Unlock()
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(calls) / time.Since(start).Seconds(), nil
}

func startBenchAgents(ctx context.Context, o benchOpts, addr, dir string) ([]*exec.Cmd, error) {
	var cmds []*exec.Cmd
	for i := 1; i <= o.agents; i++ {
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("agent-%d.log", i)))
		if err != nil {
			stopBenchAgents(cmds)
			return nil, err
		}
		c := exec.CommandContext(ctx, o.agentBin, "--server", addr, "--id", fmt.Sprintf("bench-%d", i), "--handler", o.handlerName()+"="+o.handlerBin,
			"--data-dir", filepath.Join(dir, fmt.Sprintf("agent-%d", i)))
		c.Stdout, c.Stderr = logf, logf
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its handlers die with it
		if err := c.Start(); err != nil {
			logf.Close()
			stopBenchAgents(cmds)
			return nil, fmt.Errorf("bench: starting %s: %w", o.agentBin, err)
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

// waitBenchAgents waits until n agents are registered with srv.
func waitBenchAgents(app *App, srv *sched.Server, n int, dir string) error {
	fmt.Fprintf(app.Err, "bench: waiting for %d agents…\n", n)
	for deadline := time.Now().Add(30 * time.Second); len(srv.Agents()) < n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: only %d of %d agents registered within 30s (agent logs in %s)", len(srv.Agents()), n, dir)
		}
	}
	return nil
}

func stopBenchAgents(cmds []*exec.Cmd) {
	for _, c := range cmds {
		if c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		}
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
}

// benchSubmit submits n test.echo tasks with k concurrent clients and returns their
// ids; with batch > 1 each client sends SubmitBatch calls of up to batch tasks.
func benchSubmit(ctx context.Context, c paddockv1connect.TaskServiceClient, n, k, batch int) ([]string, error) {
	batch = max(batch, 1)
	ids := make([]string, n)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for w := 0; w < k; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			// Client w submits chunks w, w+k, w+2k, … of batch tasks each.
			for lo := w * batch; lo < n; lo += k * batch {
				hi := min(lo+batch, n)
				if batch == 1 {
					resp, err := c.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: benchSpec()}))
					if err != nil {
						errs[w] = fmt.Errorf("bench: submitting task %d: %w", lo, err)
						return
					}
					ids[lo] = resp.Msg.GetTask().GetId()
					continue
				}
				specs := make([]*paddockv1.TaskSpec, hi-lo)
				for i := range specs {
					specs[i] = benchSpec()
				}
				resp, err := c.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: specs}))
				if err != nil {
					errs[w] = fmt.Errorf("bench: submitting tasks %d–%d: %w", lo, hi-1, err)
					return
				}
				for i, r := range resp.Msg.GetResults() {
					ids[lo+i] = r.GetTask().GetId()
				}
			}
		}(w)
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

// benchSpec is the no-op task the durable bench runs.
func benchSpec() *paddockv1.TaskSpec {
	return &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("x")}
}

// waitTerminal polls the store until every task in ids is terminal.
// waitDrained waits until the store holds no live task (the bench's server has only
// the bench's tasks): until last (submitted last, so dispatched about last) has ended,
// a read of it every 20 ms, then a count of the live tasks every 20 ms. Reading every
// task, or counting a long queue every 20 ms, cost the measured server a tenth of its
// CPU.
func waitDrained(ctx context.Context, st store.Store, last string) error {
	if err := waitTerminal(ctx, st, []string{last}); err != nil {
		return err
	}
	for {
		cs, err := st.Counts(ctx)
		if err != nil {
			return fmt.Errorf("bench: counting live tasks: %w", err)
		}
		live := int64(0)
		for _, c := range cs {
			if !c.State.Terminal() {
				live += c.N
			}
		}
		if live == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitTerminal(ctx context.Context, st store.Store, ids []string) error {
	for _, id := range ids {
		for {
			t, err := st.Get(ctx, id)
			if err != nil {
				return fmt.Errorf("bench: reading task %s: %w", id, err)
			}
			if t.State.Terminal() {
				if t.State != store.Succeeded {
					return fmt.Errorf("bench: task %s ended %s: %s", id, t.State, t.Error)
				}
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// startLatencies returns, for each task, the time from submission to the handler start
// (the agent's acknowledgement that it started the run).
func startLatencies(ctx context.Context, st store.Store, ids []string) ([]time.Duration, error) {
	out := make([]time.Duration, 0, len(ids))
	for _, id := range ids {
		t, err := st.Get(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("bench: reading task %s: %w", id, err)
		}
		out = append(out, t.StartedAt.Sub(t.CreatedAt))
	}
	return out, nil
}

// localServer is a server in this process on loopback ports with its SQLite file in a
// directory, as paddock bench runs one.
type localServer struct {
	Server    *sched.Server
	AgentAddr string // host:port of the agent port
	URL       string // http://host:port of the client port
	ctx       context.Context
	stop      func()
	served    chan error
	st        io.Closer
}

// startLocalServer starts a server on 127.0.0.1 with <dir>/paddock.db and cfg.
func startLocalServer(ctx context.Context, dir string, cfg sched.Config) (*localServer, error) {
	st, err := sqlite.Open(ctx, filepath.Join(dir, "paddock.db"), sqlite.Options{})
	if err != nil {
		return nil, err
	}
	srv, err := sched.New(cfg, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listening for agents: %w", err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		al.Close()
		st.Close()
		return nil, fmt.Errorf("listening for clients: %w", err)
	}
	ls := &localServer{Server: srv, AgentAddr: al.Addr().String(), URL: "http://" + cl.Addr().String(), served: make(chan error, 1), st: st}
	ls.ctx, ls.stop = context.WithCancel(ctx)
	go func() { ls.served <- srv.Run(ls.ctx, al, cl) }()
	return ls, nil
}

// Stop stops the server and closes its database.
func (ls *localServer) Stop() {
	ls.stop()
	<-ls.served
	ls.st.Close()
}

// startCPUProfile profiles this process into path until the returned function is
// called; with an empty path it does nothing.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: starting: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
