package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

// Kill kinds.
const (
	kindServer  = "server"
	kindAgent   = "agent"
	kindHandler = "handler"
	kindHost    = "host"
	kindGuest   = "guest"
)

// kill is one kill -9 (or virsh destroy) the run did.
type kill struct {
	at     time.Duration // since the run started
	kind   string
	target string // component or guest name, or the handler's agent
	pid    int
	down   time.Duration // how long it stayed down before its restart (server, agent, host)
}

// taskRec is one task the run submits.
type taskRec struct {
	idx     int
	typ     string
	payload string
	key     string // idempotency key
	id      string // set once a Submit succeeded
	retries int    // failed Submit calls before that
}

// seen is what the watcher saw of a task the first time it was terminal.
type seen struct {
	state   paddockv1.State
	attempt int32
	lease   uint64
	agent   string
	at      time.Duration
}

// run is one chaos run: the processes, the tasks, what was killed and what was seen.
type run struct {
	t      testing.TB
	p      params
	dir    string // data and logs; 0755 so that QEMU reaches the guest directories
	bin    string
	tenant string

	rngMu sync.Mutex
	rng   *mrand.Rand

	server *component
	agents []*component
	host   *component // nil: no guests
	uri    string
	prefix string // guest name prefix (the VM test)

	clientAddr, agentAddr, clusterAddr string
	tasks                              paddockv1connect.TaskServiceClient
	cluster                            paddockv1connect.ClusterServiceClient

	start time.Time

	mu      sync.Mutex
	kills   []kill
	missed  []string // kills that found no target
	crashes []string // components that exited without being killed
	leaks   []string // processes or guests left behind
	first   map[string]seen
	changed []string // a task seen terminal that later showed another ending

	down sync.Map // component name → true while killed on purpose
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *run) intn(n int) int {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.IntN(n)
}

func (r *run) dur(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return time.Duration(r.rng.Int64N(int64(max)))
}

func (r *run) since() time.Duration { return time.Since(r.start).Round(10 * time.Millisecond) }

func (r *run) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("[%8v] %s", r.since(), fmt.Sprintf(format, args...))
}

var httpClient = http.Client{Timeout: 30 * time.Second}

// newRun makes the run directory and starts the server and the TCP agents.
func newRun(t *testing.T, p params) *run {
	t.Helper()
	bin := binaries(t)
	dir, err := os.MkdirTemp("", "paddock-chaos-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, p: p, dir: dir, bin: bin, tenant: "chaos" + randHex(4),
		rng: mrand.New(mrand.NewPCG(uint64(p.Seed), uint64(p.Seed)>>1|1)), first: map[string]seen{}}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("PADDOCK_CHAOS_KEEP") == "1" {
			t.Logf("run directory kept for inspection: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	r.clientAddr, r.agentAddr, r.clusterAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`data_dir: %s
log:
  level: info
  format: text
server:
  listen: %s
  agent_listen: %s
  cluster_listen: %s
  dev: true
  agent_token: chaos-agent-token
  heartbeat_interval: 500ms
  lease_ttl: 5s
  retry_base: 100ms
  retry_max: 2s
  default_max_attempts: 20
  default_task_timeout: 1m
`, filepath.Join(dir, "data"), r.clientAddr, r.agentAddr, r.clusterAddr)
	cfgPath := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.server = &component{name: "server", bin: filepath.Join(bin, "paddock"), args: []string{"--config", cfgPath, "server"}, dir: dir}
	r.tasks = paddockv1connect.NewTaskServiceClient(&httpClient, "http://"+r.clientAddr)
	r.cluster = paddockv1connect.NewClusterServiceClient(&httpClient, "http://"+r.clientAddr)
	t.Cleanup(r.sweep)
	if err := r.server.start(); err != nil {
		t.Fatal(err)
	}
	r.waitServer(time.Minute)
	if err := os.WriteFile(filepath.Join(dir, "no-agent-config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < p.Agents; i++ {
		id := fmt.Sprintf("chaos-agent-%d", i)
		a := &component{name: id, bin: filepath.Join(bin, "paddock-agent"), dir: dir, args: []string{
			"--config", filepath.Join(dir, "no-agent-config.json"), "--server", r.agentAddr, "--id", id, "--token", "chaos-agent-token",
			"--handler", "testhandler=" + filepath.Join(bin, "handlers", "testhandler"),
			"--handler", "journalhandler=" + filepath.Join(bin, "handlers", "journalhandler"), "--data-dir", filepath.Join(dir, id)},
			env: []string{"PADDOCK_CHAOS_JOURNAL=" + r.journalPath()}}
		r.agents = append(r.agents, a)
		if err := a.start(); err != nil {
			t.Fatal(err)
		}
	}
	r.waitAgents(p.Agents, time.Minute)
	return r
}

// components are the restartable processes of the run.
func (r *run) components() []*component {
	cs := append([]*component{r.server}, r.agents...)
	if r.host != nil {
		cs = append(cs, r.host)
	}
	return cs
}

// waitServer waits until the client port answers Status.
func (r *run) waitServer(within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := r.cluster.Status(ctx, connect.NewRequest(&paddockv1.StatusRequest{}))
		cancel()
		if err == nil {
			return
		}
		if ex, st := r.server.exitedEarly(); ex {
			r.t.Fatalf("the server exited at start (%s):\n%s", st, r.server.tail(40))
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the server does not answer on %s after %v: %v\n%s", r.clientAddr, within, err, r.server.tail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// connectedAgents lists the ids of the agents the server has a session with.
func (r *run) connectedAgents() (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := r.cluster.ListAgents(ctx, connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, a := range res.Msg.GetAgents() {
		if a.GetState() == "connected" {
			ids[a.GetId()] = true
		}
	}
	return ids, nil
}

// waitAgents waits until n agents are connected.
func (r *run) waitAgents(n int, within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ids, err := r.connectedAgents()
		if err == nil && len(ids) >= n {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d agents connected after %v, want %d (%v)", len(ids), within, n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// spec picks task i: short sleeps (test.sleep, and chaos.run, whose executions the
// journal handler records), echoes, and a few flaky tasks that fail their first
// attempt (so retries run beside the kills).
func (r *run) spec(i int) taskRec {
	t := taskRec{idx: i, key: fmt.Sprintf("%s-%d", r.tenant, i)}
	switch x := r.intn(10); {
	case x < 3:
		t.typ, t.payload = "test.sleep", (r.dur(r.p.MaxSleep) + time.Millisecond).Round(time.Millisecond).String()
	case x < 5:
		t.typ, t.payload = "chaos.run", (r.dur(r.p.MaxSleep) + time.Millisecond).Round(time.Millisecond).String()
	case x < 9:
		t.typ, t.payload = "test.echo", fmt.Sprintf("chaos %s task %d %s", r.tenant, i, randHex(4))
	default:
		t.typ, t.payload = "test.flaky", "1"
	}
	return t
}

// submitAll submits every task at the run's rate, each retried (same idempotency key)
// until the server takes it.
func (r *run) submitAll(ctx context.Context) []*taskRec {
	recs := make([]*taskRec, r.p.Tasks)
	for i := range recs {
		rec := r.spec(i)
		recs[i] = &rec
	}
	work, wait := pool(func(rec *taskRec) { r.submit(ctx, rec) })
	interval := time.Duration(float64(time.Second) / r.p.Rate)
	next := time.Now()
	for _, rec := range recs {
		time.Sleep(time.Until(next))
		next = next.Add(interval)
		select {
		case work <- rec:
		case <-ctx.Done():
		}
	}
	close(work)
	wait()
	return recs
}

// pool runs fn on 8 goroutines for each task sent on work; close work, then call wait.
func pool(fn func(*taskRec)) (work chan<- *taskRec, wait func()) {
	ch := make(chan *taskRec)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rec := range ch {
				fn(rec)
			}
		}()
	}
	return ch, wg.Wait
}

func (r *run) submit(ctx context.Context, rec *taskRec) {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := r.tasks.Submit(cctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{
			Type: rec.typ, Payload: []byte(rec.payload), Tenant: r.tenant, IdempotencyKey: rec.key, MaxAttempts: 20, TimeoutMs: 60_000}}))
		cancel()
		if err == nil {
			rec.id = res.Msg.GetTask().GetId()
			return
		}
		if c := connect.CodeOf(err); c == connect.CodeInvalidArgument || c == connect.CodeUnauthenticated || c == connect.CodePermissionDenied {
			r.t.Errorf("submit %s: %v (a refusal, not an outage)", rec.key, err)
			return
		}
		rec.retries++
		time.Sleep(200 * time.Millisecond)
	}
}

// listAll pages through the run's tasks in one state (UNSPECIFIED: all).
func (r *run) listAll(ctx context.Context, st paddockv1.State) ([]*paddockv1.Task, error) {
	var out []*paddockv1.Task
	tok := ""
	for {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		res, err := r.tasks.List(cctx, connect.NewRequest(&paddockv1.ListRequest{State: st, Tenant: r.tenant, Limit: 1000, PageToken: tok}))
		cancel()
		if err != nil {
			return nil, err
		}
		out = append(out, res.Msg.GetTasks()...)
		if tok = res.Msg.GetNextPageToken(); tok == "" {
			return out, nil
		}
	}
}

func terminal(s paddockv1.State) bool { return s >= paddockv1.State_STATE_SUCCEEDED }

// watch records each task's first terminal sighting and notes any task whose ending
// later changes (it would have completed twice).
func (r *run) watch(ctx context.Context) {
	for ctx.Err() == nil {
		r.observe(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

func (r *run) observe(ctx context.Context) {
	for _, st := range []paddockv1.State{paddockv1.State_STATE_SUCCEEDED, paddockv1.State_STATE_FAILED, paddockv1.State_STATE_DEAD, paddockv1.State_STATE_CANCELLED} {
		ts, err := r.listAll(ctx, st)
		if err != nil {
			return // the server is down: next round
		}
		r.mu.Lock()
		for _, tk := range ts {
			now := seen{state: tk.GetState(), attempt: tk.GetAttempt(), lease: tk.GetLeaseId(), agent: tk.GetAgentId(), at: r.since()}
			if f, ok := r.first[tk.GetId()]; !ok {
				r.first[tk.GetId()] = now
			} else if f.state != now.state || f.attempt != now.attempt || f.lease != now.lease || f.agent != now.agent {
				r.changed = append(r.changed, fmt.Sprintf("task %s: %v attempt %d lease %d on %s at %v, then %v attempt %d lease %d on %s at %v",
					tk.GetId(), f.state, f.attempt, f.lease, f.agent, f.at, now.state, now.attempt, now.lease, now.agent, now.at))
				r.first[tk.GetId()] = now
			}
		}
		r.mu.Unlock()
	}
}

// supervise restarts a component that exited without being killed, noting the crash.
func (r *run) supervise(ctx context.Context) {
	for ctx.Err() == nil {
		for _, c := range r.components() {
			if _, down := r.down.Load(c.name); down {
				continue
			}
			if ex, st := c.exitedEarly(); ex {
				r.mu.Lock()
				r.crashes = append(r.crashes, fmt.Sprintf("%v %s exited by itself (%s); log tail:\n%s", r.since(), c.name, st, c.tail(20)))
				r.mu.Unlock()
				r.logf("%s exited by itself (%s): restarting it", c.name, st)
				if err := c.start(); err != nil {
					r.t.Errorf("restarting %s: %v", c.name, err)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// schedule returns n random offsets in [10 %, 90 %] of the window, sorted.
func (r *run) schedule(n int) []time.Duration {
	w := r.p.window()
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = w/10 + r.dur(w*8/10)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// chaos kills each kind p.Kills times at random moments of the submission window,
// restarting killed components after a random delay. It returns when every kill and
// restart is done.
func (r *run) chaos(ctx context.Context, kinds []string) {
	var wg sync.WaitGroup
	for _, kind := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, at := range r.schedule(r.p.Kills) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(r.start.Add(at))):
				}
				r.killOne(ctx, kind)
			}
		}()
	}
	wg.Wait()
}

// killOne kills one target of kind, trying for up to 30 s to find one (a handler may be
// restarting; for a guest up to 10 minutes: a TCG boot on a loaded machine takes
// minutes), then restarts it if it is a component.
func (r *run) killOne(ctx context.Context, kind string) {
	wait := 30 * time.Second
	if kind == kindGuest {
		wait = 10 * time.Minute
	}
	deadline := time.Now().Add(wait)
	for ctx.Err() == nil {
		if r.tryKill(kind) {
			return
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			r.missed = append(r.missed, fmt.Sprintf("%v %s: no target for %v", r.since(), kind, wait))
			r.mu.Unlock()
			r.logf("kill %s: no target found for %v", kind, wait)
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (r *run) tryKill(kind string) bool {
	switch kind {
	case kindServer:
		return r.killComponent(kind, r.server)
	case kindAgent:
		return r.killComponent(kind, r.agents[r.intn(len(r.agents))])
	case kindHost:
		return r.killComponent(kind, r.host)
	case kindHandler:
		return r.killHandler()
	case kindGuest:
		return r.killGuest()
	}
	panic("unknown kind " + kind)
}

func (r *run) note(k kill) {
	r.mu.Lock()
	r.kills = append(r.kills, k)
	r.mu.Unlock()
}

// killComponent kills c with SIGKILL, waits a random time up to MaxDown, and starts it
// again.
func (r *run) killComponent(kind string, c *component) bool {
	if _, down := r.down.LoadOrStore(c.name, true); down {
		return false // another kill of it is under way
	}
	defer r.down.Delete(c.name)
	at := r.since()
	pid := c.kill9()
	if pid == 0 {
		return false
	}
	down := r.dur(r.p.MaxDown)
	r.logf("kill -9 %s (pid %d); restart in %v", c.name, pid, down.Round(time.Millisecond))
	if kind == kindAgent {
		go r.checkOrphans(c.name, pid)
	}
	time.Sleep(down)
	if err := c.start(); err != nil {
		r.t.Errorf("restarting %s: %v", c.name, err)
	}
	r.note(kill{at: at, kind: kind, target: c.name, pid: pid, down: down})
	return true
}

// checkOrphans looks, a few seconds after an agent's kill, for handler processes it
// left behind (children of the killed pid, or reparented to init or a subreaper).
func (r *run) checkOrphans(agent string, pid int) {
	time.Sleep(3 * time.Second)
	live := map[int]bool{}
	for _, a := range r.agents {
		if p := a.pid(); p != 0 {
			live[p] = true
		}
	}
	for _, p := range processes(r.bin) {
		if isHandler(r.bin, p) && !live[p.ppid] {
			r.mu.Lock()
			r.leaks = append(r.leaks, fmt.Sprintf("%v handler pid %d (parent %d) outlived agent %s (pid %d) killed 3s before", r.since(), p.pid, p.ppid, agent, pid))
			r.mu.Unlock()
		}
	}
}

// isHandler says whether p runs one of the run's handler binaries.
func isHandler(bin string, p procInfo) bool {
	return filepath.Dir(p.exe) == filepath.Join(bin, "handlers")
}

// killHandler kills one handler process of a random running agent.
func (r *run) killHandler() bool {
	owner := map[int]string{}
	for _, a := range r.agents {
		if p := a.pid(); p != 0 {
			owner[p] = a.name
		}
	}
	var hs []procInfo
	for _, p := range processes(r.bin) {
		if isHandler(r.bin, p) && owner[p.ppid] != "" {
			hs = append(hs, p)
		}
	}
	if len(hs) == 0 {
		return false
	}
	h := hs[r.intn(len(hs))]
	at := r.since()
	if err := syscall.Kill(h.pid, syscall.SIGKILL); err != nil {
		return false
	}
	r.logf("kill -9 %s pid %d of %s", filepath.Base(h.exe), h.pid, owner[h.ppid])
	r.note(kill{at: at, kind: kindHandler, target: owner[h.ppid], pid: h.pid})
	return true
}

// killGuest destroys one running guest of the run whose agent is connected (virsh
// destroy: QEMU killed). A guest still booting is left alone: destroying it races its
// creation (the destroy then fails, and the pool backs off as for a failed boot).
func (r *run) killGuest() bool {
	gs, err := guests(r.uri, r.prefix, false)
	if err != nil || len(gs) == 0 {
		return false
	}
	conn, err := r.connectedAgents()
	if err != nil {
		return false
	}
	var up []string
	for _, g := range gs {
		if conn[g] {
			up = append(up, g)
		}
	}
	if len(up) == 0 {
		return false
	}
	g := up[r.intn(len(up))]
	at := r.since()
	if out, err := exec.Command("virsh", "-c", r.uri, "destroy", g).CombinedOutput(); err != nil {
		r.logf("virsh destroy %s: %v: %s", g, err, strings.TrimSpace(string(out)))
		return false
	}
	r.logf("virsh destroy %s", g)
	r.note(kill{at: at, kind: kindGuest, target: g})
	return true
}

// waitTerminal waits until no task of the run is queued, leased or running, twice in
// a row (a task may move between the lists of two states while they are read).
func (r *run) waitTerminal(within time.Duration) (live int) {
	deadline := time.Now().Add(within)
	zeros := 0
	for {
		live = 0
		ok := true
		for _, st := range []paddockv1.State{paddockv1.State_STATE_QUEUED, paddockv1.State_STATE_LEASED, paddockv1.State_STATE_RUNNING} {
			ts, err := r.listAll(context.Background(), st)
			if err != nil {
				ok = false
				break
			}
			live += len(ts)
		}
		if ok && live == 0 {
			if zeros++; zeros == 2 {
				return 0
			}
		} else {
			zeros = 0
		}
		if time.Now().After(deadline) {
			return live
		}
		time.Sleep(time.Second)
	}
}

// stopAll stops every component gracefully (agents, host, then the server), noting
// the ones that needed SIGKILL.
func (r *run) stopAll() {
	var wg sync.WaitGroup
	for _, a := range r.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !a.stop(30 * time.Second) {
				r.t.Errorf("%s did not stop within 30s of SIGTERM", a.name)
			}
		}()
	}
	wg.Wait()
	if r.host != nil && !r.host.stop(2*time.Minute) {
		r.t.Errorf("the host daemon did not stop within 2m of SIGTERM")
	}
	if !r.server.stop(30 * time.Second) {
		r.t.Errorf("the server did not stop within 30s of SIGTERM")
	}
}

// leaked returns the run's processes and guests still there.
func (r *run) leaked() []string {
	var out []string
	for _, p := range processes(r.bin) {
		out = append(out, fmt.Sprintf("process %d (parent %d): %s", p.pid, p.ppid, p.cmdline))
	}
	if r.prefix != "" {
		gs, err := guests(r.uri, r.prefix, true)
		if err != nil {
			out = append(out, "listing guests: "+err.Error())
		}
		for _, g := range gs {
			out = append(out, "guest "+g)
		}
	}
	return out
}

// sweep, at cleanup, kills whatever the run left (process groups, guests).
func (r *run) sweep() {
	for _, c := range r.components() {
		c.stop(5 * time.Second)
	}
	for _, p := range processes(r.bin) { // only this run's binaries
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	if r.prefix != "" {
		gs, _ := guests(r.uri, r.prefix, true)
		for _, g := range gs {
			_ = exec.Command("virsh", "-c", r.uri, "destroy", g).Run()
			_ = exec.Command("virsh", "-c", r.uri, "undefine", g).Run()
		}
	}
}

// result is what a run's check found.
type result struct {
	submitted, succeeded, other, nonTerminal, lost, twice, wrongOutput int
	submitRetries, rerun, maxAttempts                                  int
	byAgent                                                            map[string]int
	runOutputs                                                         map[string]string // chaos.run: id → output
	// guestProbe: the guest on which a probe after the chaos succeeded, when no task of
	// the run did (probeGuest).
	guestProbe string
	journal    journalStats
}

// execute runs the chaos: submissions, kills and the watcher at once; then waits for
// the tasks to end, checks them, stops everything and checks for leaks.
func (r *run) execute(kinds []string) {
	t := r.t
	t.Logf("chaos run: %v; kills of %v", r.p, kinds)
	r.start = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { defer bg.Done(); r.watch(ctx) }()
	go func() { defer bg.Done(); r.supervise(ctx) }()

	var recs []*taskRec
	var chaosDone atomic.Bool
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); recs = r.submitAll(ctx) }()
	go func() { defer wg.Done(); r.chaos(ctx, kinds); chaosDone.Store(true) }()
	wg.Wait()
	r.logf("all %d tasks submitted and every kill done; waiting up to %v for the tasks to end", len(recs), r.p.Settle)
	live := r.waitTerminal(r.p.Settle)
	r.observe(ctx)
	cancel()
	bg.Wait()
	elapsed := r.since()

	res := r.check(recs)
	if r.prefix != "" && res.byAgent["guest"] == 0 {
		// Under load the kills can destroy every guest before it runs anything (a guest
		// boots in 45 s at load 25 and the host was killed meanwhile): then the VM path
		// must still work after the chaos, and a probe shows it does.
		res.guestProbe = r.probeGuest()
	}
	if live > 0 {
		t.Errorf("%d tasks still queued, leased or running %v after the last submission and kill", live, r.p.Settle)
	}
	res.journal = r.checkJournal(res.runOutputs)
	r.stopAll()
	time.Sleep(time.Second)
	leaks := r.leaked()
	r.mu.Lock()
	leaks = append(r.leaks, leaks...)
	r.mu.Unlock()
	r.report(res, kinds, elapsed, leaks)
}

// probeGuest, after the chaos, submits bursts of 2 s sleeps (under tenant <tenant>-probe,
// so that the run's own counts are not touched) until one succeeds on a guest, for up to
// 5 minutes. It returns that guest's agent id, or "" when none did.
func (r *run) probeGuest() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r.logf("no task of the run succeeded on a guest; probing the VM path after the chaos")
	for burst := 0; ctx.Err() == nil; burst++ {
		var ids []string
		for i := 0; i < 24; i++ {
			res, err := r.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{
				Type: "test.sleep", Payload: []byte("2s"), Tenant: r.tenant + "-probe", MaxAttempts: 20, TimeoutMs: 60_000}}))
			if err == nil {
				ids = append(ids, res.Msg.GetTask().GetId())
			}
		}
		for _, id := range ids {
			w, err := r.tasks.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: 60_000}))
			if err == nil && w.Msg.GetTask().GetState() == paddockv1.State_STATE_SUCCEEDED && agentKind(w.Msg.GetTask().GetAgentId(), r.prefix) == "guest" {
				r.logf("probe burst %d: task %s succeeded on guest %s", burst, id, w.Msg.GetTask().GetAgentId())
				return w.Msg.GetTask().GetAgentId()
			}
		}
		time.Sleep(5 * time.Second)
	}
	return ""
}

// check reads every task (Get: with its attempts) and counts.
func (r *run) check(recs []*taskRec) result {
	t := r.t
	res := result{submitted: len(recs), byAgent: map[string]int{}, runOutputs: map[string]string{}}
	all, err := r.listAll(context.Background(), paddockv1.State_STATE_UNSPECIFIED)
	if err != nil {
		t.Fatalf("listing the run's tasks: %v", err)
	}
	ids := map[string]bool{}
	for _, tk := range all {
		ids[tk.GetId()] = true
	}
	if len(all) != len(recs) {
		t.Errorf("the server holds %d tasks of tenant %s, %d were submitted (idempotent resubmits must not add tasks)", len(all), r.tenant, len(recs))
	}
	var mu sync.Mutex
	work, wait := pool(func(rec *taskRec) { r.checkOne(rec, &res, &mu) })
	for _, rec := range recs {
		res.submitRetries += rec.retries
		if rec.id == "" || !ids[rec.id] {
			res.lost++
			t.Errorf("task %s (%s) lost: submit id %q not on the server", rec.key, rec.typ, rec.id)
			continue
		}
		work <- rec
	}
	close(work)
	wait()
	r.mu.Lock()
	res.twice += len(r.changed)
	for _, c := range r.changed {
		t.Errorf("completed twice: %s", c)
	}
	r.mu.Unlock()
	return res
}

func (r *run) checkOne(rec *taskRec, res *result, mu *sync.Mutex) {
	t := r.t
	var tk *paddockv1.Task
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		g, err := r.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: rec.id}))
		cancel()
		if err == nil {
			tk = g.Msg.GetTask()
			break
		}
		if try == 5 {
			t.Errorf("get %s: %v", rec.id, err)
			return
		}
		time.Sleep(time.Second)
	}
	mu.Lock()
	defer mu.Unlock()
	if !terminal(tk.GetState()) {
		res.nonTerminal++
		t.Errorf("task %s (%s) is still %v after attempt %d", rec.id, rec.typ, tk.GetState(), tk.GetAttempt())
		return
	}
	wins := 0
	for _, a := range tk.GetAttempts() {
		if a.GetState() == paddockv1.State_STATE_SUCCEEDED {
			wins++
		}
	}
	if wins > 1 {
		res.twice++
		t.Errorf("task %s (%s) has %d succeeded attempts: %v", rec.id, rec.typ, wins, tk.GetAttempts())
	}
	if n := len(tk.GetAttempts()); n > 1 {
		res.rerun++
		res.maxAttempts = max(res.maxAttempts, n)
	}
	if tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
		res.other++
		t.Errorf("task %s (%s %q) ended %v after %d attempts: %s", rec.id, rec.typ, rec.payload, tk.GetState(), tk.GetAttempt(), tk.GetError())
		return
	}
	res.succeeded++
	res.byAgent[agentKind(tk.GetAgentId(), r.prefix)]++
	if wins != 1 {
		t.Errorf("task %s (%s) succeeded with %d succeeded attempts in its history: %v", rec.id, rec.typ, wins, tk.GetAttempts())
	}
	if last := tk.GetAttempts(); len(last) > 0 {
		a := last[len(last)-1]
		if a.GetState() != paddockv1.State_STATE_SUCCEEDED || a.GetNumber() != tk.GetAttempt() || a.GetLeaseId() != tk.GetLeaseId() {
			t.Errorf("task %s: its last attempt (#%d lease %d %v) is not the one it succeeded with (#%d lease %d)", rec.id, a.GetNumber(), a.GetLeaseId(), a.GetState(), tk.GetAttempt(), tk.GetLeaseId())
		}
	}
	want := ""
	switch rec.typ {
	case "test.echo":
		want = rec.payload
	case "test.sleep":
		d, _ := time.ParseDuration(rec.payload)
		want = "slept " + d.String()
	case "test.flaky":
		want = fmt.Sprintf("attempt %d succeeded (failed attempts before it: 1)", tk.GetAttempt())
	case "chaos.run":
		want = fmt.Sprintf("%s attempt %d pid ", tk.GetId(), tk.GetAttempt())
		if got := string(tk.GetOutput()); strings.HasPrefix(got, want) {
			want = got // the pid is checked against the journal
			res.runOutputs[tk.GetId()] = got
		}
	}
	if got := string(tk.GetOutput()); got != want {
		res.wrongOutput++
		t.Errorf("task %s (%s attempt %d): output %q, want %q", rec.id, rec.typ, tk.GetAttempt(), got, want)
	}
}

func agentKind(id, prefix string) string {
	if prefix != "" && strings.HasPrefix(id, prefix) {
		return "guest"
	}
	return "tcp-agent"
}

// report logs the kills and the figures, and fails the test on any broken invariant.
func (r *run) report(res result, kinds []string, elapsed time.Duration, leaks []string) {
	t := r.t
	r.mu.Lock()
	defer r.mu.Unlock()
	sort.Slice(r.kills, func(i, j int) bool { return r.kills[i].at < r.kills[j].at })
	var b strings.Builder
	per := map[string]int{}
	for _, k := range r.kills {
		per[k.kind]++
		fmt.Fprintf(&b, "  %9v  %-8s %-22s pid %-7d", k.at, k.kind, k.target, k.pid)
		if k.down > 0 {
			fmt.Fprintf(&b, " down %v", k.down.Round(time.Millisecond))
		}
		b.WriteString("\n")
	}
	t.Logf("kills (%d):\n%s", len(r.kills), b.String())
	t.Logf("CHAOS RESULT: tasks=%d succeeded=%d other_end=%d not_terminal=%d lost=%d completed_twice=%d wrong_output=%d "+
		"leaked=%d crashes=%d reruns=%d (max attempts %d) submit_retries=%d ran_on=%v kills=%v wall=%v; "+
		"journal (chaos.run): executions started=%d completed=%d tasks_completed_more_than_once=%d ran_twice_at_once=%d",
		res.submitted, res.succeeded, res.other, res.nonTerminal, res.lost, res.twice, res.wrongOutput,
		len(leaks), len(r.crashes), res.rerun, res.maxAttempts, res.submitRetries, res.byAgent, per, elapsed.Round(time.Second),
		res.journal.started, res.journal.completed, res.journal.rerun, res.journal.concurrent)
	for _, kind := range kinds {
		if per[kind] < r.p.Kills {
			t.Errorf("%s killed %d times, want at least %d", kind, per[kind], r.p.Kills)
		}
	}
	if r.prefix != "" && res.byAgent["guest"] == 0 && res.guestProbe == "" {
		t.Errorf("no task succeeded on a guest, during the chaos or in the probe after it: the VM path was not exercised")
	}
	for _, m := range r.missed {
		t.Logf("missed kill: %s", m)
	}
	for _, c := range r.crashes {
		t.Errorf("crash: %s", c)
	}
	for _, l := range leaks {
		t.Errorf("leaked: %s", l)
	}
	if t.Failed() {
		for _, c := range r.components() {
			t.Logf("%s log (tail):\n%s", c.name, c.tail(30))
		}
	}
}
