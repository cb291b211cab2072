package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// Config says where the server is and how to reach it.
type Config struct {
	// Server is the URL of the server's client API, e.g. "http://127.0.0.1:7070".
	Server string
	// Token is the client bearer token ("" for a dev server). It reaches the CLI
	// through PADDOCK_CLIENT_TOKEN, never on a command line.
	Token string
	// Paddock is the path of the paddock CLI binary (default "bin/paddock").
	Paddock string
	// Examples is the directory with the demo inputs (default "examples/demo").
	Examples string
	// AgentWait is how long to wait for agents serving every type the scenario needs
	// (default 5 minutes: guests may still be booting).
	AgentWait time.Duration
	// TaskWait is how long to wait for all the tasks once submitted (default 5 minutes).
	TaskWait time.Duration
	// Progress is how often a line says what is still pending (default 5s).
	Progress time.Duration
	// Out receives the scenario's output (default os.Stdout).
	Out io.Writer
}

func (c *Config) defaults() error {
	if c.Server == "" {
		return errors.New("demo: no server address: pass --server URL (e.g. http://127.0.0.1:7070)")
	}
	if c.Paddock == "" {
		c.Paddock = "bin/paddock"
	}
	if c.Examples == "" {
		c.Examples = "examples/demo"
	}
	if c.AgentWait == 0 {
		c.AgentWait = 5 * time.Minute
	}
	if c.TaskWait == 0 {
		c.TaskWait = 5 * time.Minute
	}
	if c.Progress == 0 {
		c.Progress = 5 * time.Second
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if _, err := os.Stat(c.Paddock); err != nil {
		return fmt.Errorf("demo: the paddock CLI %s: %w (run `make build`, or pass --paddock PATH)", c.Paddock, err)
	}
	for _, f := range []string{"truth.csv", "sample.log", "logscan.json", "submissions/otter.csv"} {
		if _, err := os.Stat(filepath.Join(c.Examples, f)); err != nil {
			return fmt.Errorf("demo: input %s: %w (run from the repository root, or pass --examples DIR)", filepath.Join(c.Examples, f), err)
		}
	}
	return nil
}

// Teams are the three competition submissions, examples/demo/submissions/<team>.csv.
var Teams = []string{"otter", "badger", "heron"}

// Types are the task types the scenario needs an agent for.
var Types = []string{"checksum", "logscan", "score", "test.flaky", "compress.zstd", "decompress.zstd"}

// job is one task of the scenario.
type job struct {
	kind  string // "checksum", "logscan", "score", "retry"
	label string // what the task is, for humans
	team  string // score jobs
	args  []string

	id   string
	task *paddockv1.Task
}

// Summary is what a run produced.
type Summary struct {
	// Tasks are the final tasks by their scenario name ("checksum", "logscan",
	// "score/otter", …, "retry").
	Tasks map[string]*paddockv1.Task
	// Leaderboard is the ranked score rows.
	Leaderboard []Row
}

// Row is one leaderboard row.
type Row struct {
	Rank     int
	Team     string
	F1       float64
	Accuracy float64
}

// Run drives the scenario against cfg.Server through the paddock CLI and prints it to
// cfg.Out: the commands it runs, each result as it arrives, the retries of the
// failing task, and the leaderboard. It returns an error when the server is not
// reachable, when agents do not come, or when a task does not end as it must.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, start: time.Now()}
	r.printf("== Paddock demo against %s ==\n", cfg.Server)
	r.printf("(every paddock command below runs with --server %s)\n", cfg.Server)
	if err := r.waitAgents(ctx); err != nil {
		return nil, err
	}
	jobs := r.jobs()
	r.printf("\n-- submitting %d tasks --\n", len(jobs))
	for _, j := range jobs {
		if err := r.submit(ctx, j); err != nil {
			return nil, err
		}
	}
	r.printf("\n-- results, as they arrive --\n")
	if err := r.follow(ctx, jobs); err != nil {
		return nil, err
	}
	sum := &Summary{Tasks: map[string]*paddockv1.Task{}}
	var bad []string
	for _, j := range jobs {
		name := j.kind
		if j.team != "" {
			name += "/" + j.team
		}
		sum.Tasks[name] = j.task
		want := paddockv1.State_STATE_SUCCEEDED
		if j.task.GetState() != want {
			bad = append(bad, fmt.Sprintf("%s ended %s, want %s (%s)", j.label, stateName(j.task.GetState()), stateName(want), j.task.GetError()))
		}
	}
	if len(bad) > 0 {
		return sum, fmt.Errorf("demo: %s", strings.Join(bad, "; "))
	}
	lb, err := leaderboard(jobs)
	if err != nil {
		return sum, err
	}
	sum.Leaderboard = lb
	r.printf("\n-- leaderboard (ranked by macro-F1, then accuracy) --\n")
	tw := tabwriter.NewWriter(r.cfg.Out, 0, 4, 2, ' ', 0)
	r.mu.Lock()
	fmt.Fprintln(tw, "RANK\tTEAM\tMACRO-F1\tACCURACY")
	for _, row := range lb {
		fmt.Fprintf(tw, "%d\t%s\t%.4f\t%.4f\n", row.Rank, row.Team, row.F1, row.Accuracy)
	}
	err = tw.Flush()
	r.mu.Unlock()
	if err != nil {
		return sum, err
	}
	if err := r.history(ctx, jobs[len(jobs)-1]); err != nil {
		return sum, err
	}
	if err := r.dataPlane(ctx); err != nil {
		return sum, err
	}
	r.printf("\n== done in %s: %d tasks and the data plane's 3, all succeeded (one after a retry, as intended) ==\n",
		time.Since(r.start).Round(100*time.Millisecond), len(jobs))
	return sum, nil
}

type runner struct {
	cfg   Config
	start time.Time
	// mu serialises writes to cfg.Out.
	mu sync.Mutex
}

func (r *runner) printf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.cfg.Out, format, a...)
}

func (r *runner) path(name string) string { return filepath.Join(r.cfg.Examples, name) }

func (r *runner) jobs() []*job {
	js := []*job{
		{kind: "checksum", label: "checksum of the ground truth",
			args: []string{"--type", "checksum", "--input", "truth.csv=" + r.path("truth.csv")}},
		{kind: "logscan", label: "log scan of a service log",
			args: []string{"--type", "logscan", "--payload-file", r.path("logscan.json"), "--input", "sample.log=" + r.path("sample.log")}},
	}
	for _, t := range Teams {
		js = append(js, &job{kind: "score", team: t, label: "score of team " + t,
			args: []string{"--type", "score", "--input", "predictions=" + r.path("submissions/"+t+".csv"), "--input", "truth=" + r.path("truth.csv")}})
	}
	js = append(js, &job{kind: "retry", label: "a task that fails (retryable) and succeeds on its retry",
		args: []string{"--type", "test.flaky", "--payload", "1", "--max-attempts", "3"}})
	return js
}

// cli runs the paddock CLI with args (the server flag appended) and returns stdout.
// A non-zero exit is an error unless allowFail; stderr is part of the error.
func (r *runner) cli(ctx context.Context, allowFail bool, args ...string) ([]byte, error) {
	full := append(append([]string(nil), args...), "--server", r.cfg.Server)
	cmd := exec.CommandContext(ctx, r.cfg.Paddock, full...)
	cmd.Env = os.Environ()
	if r.cfg.Token != "" {
		cmd.Env = append(cmd.Env, "PADDOCK_CLIENT_TOKEN="+r.cfg.Token)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if !allowFail || !errors.As(err, &ee) || stdout.Len() == 0 {
			return nil, fmt.Errorf("running paddock %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
	}
	return stdout.Bytes(), nil
}

var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

// waitAgents waits until the connected agents together serve every type in Types.
func (r *runner) waitAgents(ctx context.Context) error {
	r.printf("$ paddock agent ls   # waiting for agents serving %s\n", strings.Join(Types, ", "))
	deadline := time.Now().Add(r.cfg.AgentWait)
	lastSay := time.Now()
	for {
		out, err := r.cli(ctx, false, "agent", "ls", "--json")
		if err != nil {
			return fmt.Errorf("demo: asking the server for its agents (is it running at %s?): %w", r.cfg.Server, err)
		}
		var resp paddockv1.ListAgentsResponse
		if err := unmarshal.Unmarshal(out, &resp); err != nil {
			return fmt.Errorf("demo: decoding `paddock agent ls --json`: %w", err)
		}
		served := map[string][]string{}
		for _, a := range resp.GetAgents() {
			if a.GetState() != "connected" {
				continue
			}
			for _, t := range a.GetTypes() {
				served[t.GetName()] = append(served[t.GetName()], a.GetId())
			}
		}
		var missing []string
		for _, t := range Types {
			if len(served[t]) == 0 {
				missing = append(missing, t)
			}
		}
		if len(missing) == 0 {
			for _, t := range Types {
				r.printf("  %s: served by %s\n", t, strings.Join(served[t], ", "))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: after %s no connected agent serves %s: check `paddock agent ls` and the agents' logs", r.cfg.AgentWait, strings.Join(missing, ", "))
		}
		if time.Since(lastSay) >= r.cfg.Progress {
			lastSay = time.Now()
			r.printf("  … %s: %d agent(s) connected, none serves %s yet (agents may still be starting; guests take a while to boot)\n",
				time.Since(r.start).Round(time.Second), len(resp.GetAgents()), strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// history prints `paddock task get ID` of the retried task: its attempts, one by one.
func (r *runner) history(ctx context.Context, j *job) error {
	r.printf("\n-- the retried task's history --\n$ paddock task get %s\n", j.id)
	out, err := r.cli(ctx, false, "task", "get", j.id)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		r.printf("  | %s\n", l)
	}
	return nil
}

func (r *runner) submit(ctx context.Context, j *job) error {
	args := append([]string{"task", "submit"}, j.args...)
	out, err := r.cli(ctx, false, args...)
	if err != nil {
		return fmt.Errorf("demo: submitting the %s: %w", j.label, err)
	}
	j.id = strings.TrimSpace(string(out))
	if j.id == "" || strings.ContainsAny(j.id, " \n") {
		return fmt.Errorf("demo: submitting the %s: `paddock task submit` printed %q, want a task id", j.label, out)
	}
	r.printf("$ paddock %s\n  → task %s  (%s)\n", strings.Join(args, " "), j.id, j.label)
	return nil
}

// follow waits for every job concurrently, printing the attempts that end and each
// result as it arrives, plus a progress line while tasks are pending.
func (r *runner) follow(ctx context.Context, jobs []*job) error {
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, r.cfg.TaskWait, errTaskWait)
	defer cancel()
	var (
		wg      sync.WaitGroup
		stateMu sync.Mutex // guards states and errs
		states  = map[*job]string{}
		errs    []error
	)
	for _, j := range jobs {
		states[j] = "queued"
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.followOne(ctx, j, func(s string) {
				stateMu.Lock()
				states[j] = s
				stateMu.Unlock()
			})
			stateMu.Lock()
			if err != nil {
				errs = append(errs, err)
			}
			delete(states, j)
			stateMu.Unlock()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(r.cfg.Progress)
	defer tick.Stop()
	for {
		select {
		case <-done:
			if parent.Err() != nil {
				return fmt.Errorf("demo: interrupted while waiting for the tasks: %w", parent.Err())
			}
			return errors.Join(errs...)
		case <-tick.C:
			stateMu.Lock()
			var pend []string
			for _, j := range jobs {
				if s, ok := states[j]; ok {
					pend = append(pend, j.kind+suffix(j)+" "+s)
				}
			}
			stateMu.Unlock()
			if len(pend) > 0 {
				r.printf("  … %s: waiting for %d task(s): %s\n", time.Since(r.start).Round(time.Second), len(pend), strings.Join(pend, ", "))
			}
		}
	}
}

var errTaskWait = errors.New("demo: task wait over")

func suffix(j *job) string {
	if j.team != "" {
		return "/" + j.team
	}
	return ""
}

// followOne polls `paddock task wait ID --json --timeout 2s` until the task ends.
func (r *runner) followOne(ctx context.Context, j *job, setState func(string)) error {
	printed := 0 // attempts already printed
	for {
		out, err := r.cli(ctx, true, "task", "wait", j.id, "--json", "--timeout", "2s")
		if err != nil {
			if context.Cause(ctx) == errTaskWait {
				return fmt.Errorf("demo: the %s (task %s) did not end within %s: see `paddock task get %s`", j.label, j.id, r.cfg.TaskWait, j.id)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("demo: waiting for the %s: %w", j.label, err)
		}
		t := &paddockv1.Task{}
		if err := unmarshal.Unmarshal(out, t); err != nil {
			return fmt.Errorf("demo: decoding `paddock task wait %s --json`: %w", j.id, err)
		}
		terminal := isTerminal(t.GetState())
		for _, a := range t.GetAttempts() {
			if int(a.GetNumber()) <= printed {
				continue
			}
			// A running attempt is printed once it ends; the last attempt of a
			// terminal task is the result itself.
			if a.GetFinishedAtUnixMs() == 0 || (terminal && a.GetNumber() == t.GetAttempt()) {
				break
			}
			printed = int(a.GetNumber())
			how := "failed"
			if a.GetRetryable() {
				how = "failed, retryable"
			}
			r.printf("  %s attempt %d/%d %s: %s%s\n", t.GetSpec().GetType(), a.GetNumber(), t.GetSpec().GetMaxAttempts(), how, a.GetError(),
				trailer(t, a, "requeued with backoff"))
		}
		setState(fmt.Sprintf("%s (attempt %d/%d)", stateName(t.GetState()), t.GetAttempt(), t.GetSpec().GetMaxAttempts()))
		if terminal {
			j.task = t
			r.printResult(j)
			return nil
		}
	}
}

// trailer is the part of a line the checker ignores: task, attempt, agent, duration.
func trailer(t *paddockv1.Task, a *paddockv1.Attempt, note string) string {
	var b strings.Builder
	b.WriteString("   · task ")
	b.WriteString(t.GetId())
	if a != nil {
		fmt.Fprintf(&b, ", attempt %d/%d on %s, %d ms", a.GetNumber(), t.GetSpec().GetMaxAttempts(), a.GetAgentId(), a.GetUsage().GetWallMs())
	}
	if note != "" {
		b.WriteString(", " + note)
	}
	return b.String()
}

func lastAttempt(t *paddockv1.Task) *paddockv1.Attempt {
	as := t.GetAttempts()
	if len(as) == 0 {
		return nil
	}
	return as[len(as)-1]
}

// printResult prints a terminal task's result lines. The part before "   · " is what
// Check compares with the hand-checked figures.
func (r *runner) printResult(j *job) {
	t := j.task
	tr := trailer(t, lastAttempt(t), "")
	if t.GetState() != paddockv1.State_STATE_SUCCEEDED {
		r.printf("  %s %s after %d/%d attempts: %s%s\n", t.GetSpec().GetType(), stateName(t.GetState()), t.GetAttempt(), t.GetSpec().GetMaxAttempts(), t.GetError(), tr)
		return
	}
	lines, err := describe(j, t.GetOutput())
	if err != nil {
		r.printf("  %s: cannot read the output: %v%s\n", j.label, err, tr)
		return
	}
	for i, l := range lines {
		if i == 0 {
			l += tr
		}
		r.printf("  %s\n", l)
	}
}

// describe turns a task's output into the printed figure lines.
func describe(j *job, out []byte) ([]string, error) {
	switch j.kind {
	case "checksum":
		var o struct {
			Inputs map[string]struct {
				Size   int    `json:"size"`
				SHA256 string `json:"sha256"`
				CRC32  string `json:"crc32"`
			} `json:"inputs"`
		}
		if err := json.Unmarshal(out, &o); err != nil {
			return nil, err
		}
		var lines []string
		for _, name := range sortedKeys(o.Inputs) {
			s := o.Inputs[name]
			lines = append(lines, fmt.Sprintf("checksum %s size=%d sha256=%s crc32=%s", name, s.Size, s.SHA256, s.CRC32))
		}
		return lines, nil
	case "retry":
		return []string{"test.flaky " + strings.TrimSpace(string(out))}, nil
	case "logscan":
		var o struct {
			Lines     int            `json:"lines"`
			Levels    map[string]int `json:"levels"`
			TopErrors []struct {
				Message string `json:"message"`
				Count   int    `json:"count"`
			} `json:"top_errors"`
			Patterns []struct {
				Pattern string `json:"pattern"`
				Count   int    `json:"count"`
				Matches []struct {
					Line int `json:"line"`
				} `json:"matches"`
			} `json:"patterns"`
		}
		if err := json.Unmarshal(out, &o); err != nil {
			return nil, err
		}
		lv := fmt.Sprintf("logscan sample.log lines=%d", o.Lines)
		for _, l := range []string{"trace", "debug", "info", "warn", "error", "fatal", "unknown"} {
			if n := o.Levels[l]; n > 0 {
				lv += fmt.Sprintf(" %s=%d", l, n)
			}
		}
		lines := []string{lv}
		for _, e := range o.TopErrors {
			lines = append(lines, fmt.Sprintf("logscan top error %d× %s", e.Count, e.Message))
		}
		for _, p := range o.Patterns {
			nums := make([]string, len(p.Matches))
			for i, m := range p.Matches {
				nums[i] = fmt.Sprint(m.Line)
			}
			lines = append(lines, fmt.Sprintf("logscan pattern \"%s\" matches %d lines: %s", p.Pattern, p.Count, strings.Join(nums, " ")))
		}
		return lines, nil
	case "score":
		s, err := decodeScore(out)
		if err != nil {
			return nil, err
		}
		return []string{fmt.Sprintf("score %s accuracy=%.4f macro_f1=%.4f rows=%d", j.team, s.Accuracy, s.F1, s.Rows)}, nil
	}
	return []string{fmt.Sprintf("%s output %q", j.kind, out)}, nil
}

type scoreOut struct {
	Rows     int     `json:"rows"`
	Accuracy float64 `json:"accuracy"`
	F1       float64 `json:"f1"`
}

func decodeScore(out []byte) (scoreOut, error) {
	var s scoreOut
	err := json.Unmarshal(out, &s)
	return s, err
}

// leaderboard ranks the score jobs by macro-F1, then accuracy, then team name.
func leaderboard(jobs []*job) ([]Row, error) {
	var rows []Row
	for _, j := range jobs {
		if j.kind != "score" {
			continue
		}
		s, err := decodeScore(j.task.GetOutput())
		if err != nil {
			return nil, fmt.Errorf("demo: the score of team %s: %w", j.team, err)
		}
		rows = append(rows, Row{Team: j.team, F1: s.F1, Accuracy: s.Accuracy})
	}
	sort.SliceStable(rows, func(a, b int) bool {
		if rows[a].F1 != rows[b].F1 {
			return rows[a].F1 > rows[b].F1
		}
		if rows[a].Accuracy != rows[b].Accuracy {
			return rows[a].Accuracy > rows[b].Accuracy
		}
		return rows[a].Team < rows[b].Team
	})
	for i := range rows {
		rows[i].Rank = i + 1
	}
	return rows, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func isTerminal(s paddockv1.State) bool {
	switch s {
	case paddockv1.State_STATE_SUCCEEDED, paddockv1.State_STATE_FAILED, paddockv1.State_STATE_DEAD, paddockv1.State_STATE_CANCELLED:
		return true
	}
	return false
}

func stateName(s paddockv1.State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}
