package replicatest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil))) // the agents' transports log every session end
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// paddockBin builds cmd/paddock once (cgo: it links libvirt).
func paddockBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "paddock-replicatest-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "paddock")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/paddock")
		cmd.Dir = "../.."
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building cmd/paddock (`make setup` installs libvirt-dev for the cgo build): %v\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// replica is one `paddock server` process.
type replica struct {
	id        string
	cmd       *exec.Cmd
	agentAddr string
	url       string
	tasks     paddockv1connect.TaskServiceClient
	cluster   paddockv1connect.ClusterServiceClient
	exited    chan struct{}
}

// startReplica starts `paddock server` on the PostgreSQL database dsn with id, on
// ports the kernel picks (read from its "server started" log line), and stops it
// (SIGTERM) when the test ends unless it was killed.
func startReplica(t testing.TB, bin, dsn, id string, env ...string) *replica {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "paddock.yaml")
	if err := os.WriteFile(cfgPath, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", cfgPath, "server", "--dev", "--replica-id", id, "--data-dir", dir,
		"--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--cluster-listen", "", "--log-format", "json", "--log-level", "info")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "PADDOCK_SERVER_STORE=postgres", "PADDOCK_SERVER_POSTGRES_DSN="+dsn), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{id: id, cmd: cmd, exited: make(chan struct{})}
	started := make(chan map[string]any, 1)
	logf, err := os.Create(filepath.Join(os.TempDir(), "paddock-replicatest-"+id+".log"))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			fmt.Fprintf(logf, "%s\n", line)
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "server started" {
				select {
				case started <- m:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	go func() { cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		select {
		case <-r.exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-r.exited
		}
	})
	select {
	case m := <-started:
		r.agentAddr, _ = m["agents"].(string)
		r.url = "http://" + fmt.Sprint(m["clients"])
	case <-r.exited:
		t.Fatalf("replica %s exited at start: %v (log: %s)", id, cmd.ProcessState, logf.Name())
	case <-time.After(2 * time.Minute): // a failure bound
		t.Fatalf("replica %s: no 'server started' within 2 minutes (log: %s)", id, logf.Name())
	}
	hc := &http.Client{Timeout: time.Minute}
	r.tasks = paddockv1connect.NewTaskServiceClient(hc, r.url)
	r.cluster = paddockv1connect.NewClusterServiceClient(hc, r.url)
	return r
}

// kill kills r with SIGKILL and waits for it to be gone.
func (r *replica) kill(t testing.TB) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.exited
}

// agentsOn returns the ids of the agents connected to r (nil if r does not answer).
func (r *replica) agentsOn(ctx context.Context) (map[string]bool, error) {
	resp, err := r.cluster.ListAgents(ctx, connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, a := range resp.Msg.GetAgents() {
		if a.GetState() == "connected" && a.GetReplica() == r.id {
			out[a.GetId()] = true
		}
	}
	return out, nil
}

// noop is the agents' executor: it sleeps a little (1-5ms, so that a run lasts long
// enough to kill a replica in the middle), counts the executions of each task, and
// echoes the payload.
type noop struct {
	nosleep bool // return at once (benchmarks)
	mu      sync.Mutex
	runs    map[string]int
}

func (n *noop) Types() []session.TaskType { return []session.TaskType{{Name: "noop", Version: "1"}} }

func (n *noop) Execute(ctx context.Context, tk session.Task) session.Result {
	n.mu.Lock()
	n.runs[tk.ID]++
	n.mu.Unlock()
	if n.nosleep {
		return session.Result{Output: tk.Payload}
	}
	select {
	case <-time.After(time.Millisecond + time.Duration(rand.IntN(4000))*time.Microsecond):
	case <-ctx.Done():
		return session.Result{Error: ctx.Err().Error(), Retryable: true}
	}
	return session.Result{Output: tk.Payload}
}

// startAgents runs n in-process agents (slots each) until the test ends, each given the
// agent ports of every replica (it starts at a random one).
func startAgents(t testing.TB, rs []*replica, n, slots int, ex session.Executor) {
	t.Helper()
	var addrs []string
	for _, r := range rs {
		addrs = append(addrs, r.agentAddr)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := range n {
		s, err := session.New(session.Config{AgentID: fmt.Sprintf("ag%02d", i), Host: "replicatest", Dial: session.TCPDialer(addrs[0], addrs[1:]...),
			DefaultSlots: slots, ReconnectMin: 50 * time.Millisecond, Logger: quiet}, ex)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
	}
}

// waitAgents waits until n agents are connected over the replicas rs.
func waitAgents(t testing.TB, rs []*replica, n int) map[string]string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		where := map[string]string{}
		for _, r := range rs {
			on, _ := r.agentsOn(context.Background())
			for id := range on {
				where[id] = r.id
			}
		}
		if len(where) == n {
			return where
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents connected after 2 minutes: %v", len(where), n, where)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// submitAll submits n noop tasks with idempotency keys prefix-<i> from workers
// goroutines, spread over the replicas; a submit that fails goes to the next replica
// with the same key (a replica may die in the middle). It returns when every task is
// stored, with the number of submits that were retried.
func submitAll(ctx context.Context, rs []*replica, prefix string, n, workers int) (retried int64, err error) {
	var next atomic.Int64
	var retries atomic.Int64
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				spec := &paddockv1.TaskSpec{Type: "noop", Payload: []byte(fmt.Sprint(i)), IdempotencyKey: fmt.Sprintf("%s-%d", prefix, i)}
				for try := 0; ; try++ {
					r := rs[(int(i)+w+try)%len(rs)]
					_, err := r.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
					if err == nil {
						break
					}
					retries.Add(1)
					if ctx.Err() != nil || try > 100 {
						errc <- fmt.Errorf("submitting %s: %w", spec.IdempotencyKey, err)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return retries.Load(), <-errc
}

// counts returns the tasks of the database by state (store.Counts counts live tasks
// only), read with SQL.
func counts(ctx context.Context, st *postgres.Store) (map[store.State]int64, error) {
	rows, err := st.Pool().Query(ctx, `SELECT state, count(*) FROM tasks GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[store.State]int64{}
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			return nil, err
		}
		out[store.State(state)] = n
	}
	return out, rows.Err()
}

func terminal(c map[store.State]int64) int64 {
	var n int64
	for s, k := range c {
		if s.Terminal() {
			n += k
		}
	}
	return n
}

// waitTerminal waits until at least n tasks are terminal, failing after d.
func waitTerminal(t testing.TB, st *postgres.Store, n int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := counts(context.Background(), st)
		if err == nil && terminal(c) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks terminal after %v: %v (err %v)", terminal(c), n, d, c, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allTasks lists every task of the store.
func allTasks(ctx context.Context, st store.Store) ([]store.Task, error) {
	var out []store.Task
	tok := ""
	for {
		ts, next, err := st.List(ctx, store.Filter{Limit: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
		if next == "" {
			return out, nil
		}
		tok = next
	}
}

// taskCount is PADDOCK_REPLICA_TASKS, else def.
func taskCount(t testing.TB, def int) int {
	v := os.Getenv("PADDOCK_REPLICA_TASKS")
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscan(strings.TrimSpace(v), &n); err != nil || n < 1 {
		t.Fatalf("PADDOCK_REPLICA_TASKS=%q: give a number of tasks, e.g. 10000", v)
	}
	return n
}
