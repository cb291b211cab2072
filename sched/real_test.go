package sched_test

// Tests with real agents: the test agent (sched/internal/testagent) runs as a separate
// process speaking the agent protocol over TCP and runs real handler subprocesses
// (plugins/handlers/testhandler and checksum) through plugins/runner; the store is a
// real SQLite file. TestRealServerKill9 also runs the server as a process and kills it.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched/store"
)

var bins struct {
	dir                                  string
	agent, server, testhandler, checksum string
	err                                  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paddock-sched-bins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	build := func(out, pkg string) string {
		p := filepath.Join(dir, out)
		if bins.err != nil {
			return p
		}
		cmd := exec.Command("go", "build", "-o", p, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("building %s: %v\n%s", pkg, err, b)
		}
		return p
	}
	bins.agent = build("testagent", "github.com/paddockvm/paddock/sched/internal/testagent")
	bins.server = build("testserver", "github.com/paddockvm/paddock/sched/internal/testserver")
	bins.testhandler = build("testhandler", "github.com/paddockvm/paddock/plugins/handlers/testhandler")
	bins.checksum = build("checksum", "github.com/paddockvm/paddock/plugins/handlers/checksum")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needBins(t testing.TB) {
	t.Helper()
	if bins.err != nil {
		t.Fatalf("test binaries: %v", bins.err)
	}
}

// proc is a subprocess started by a test, killed at cleanup.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// kill9 kills the process with SIGKILL, and then what is left of its process group
// (an agent's handler subprocesses, which outlive a killed agent).
func (p *proc) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// startProc starts a binary and waits for a line starting with ready on its stdout.
func startProc(t testing.TB, name, ready string, bin string, args ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
		}
		p.kill9()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s log (tail):\n%s", name, b)
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), ready) {
				lines <- sc.Text()
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case l := <-lines:
		return p, l
	case <-p.done:
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("%s exited before it was ready:\n%s", name, b)
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready after 60s", name)
	}
	return nil, ""
}

// startRealAgent starts the test agent with 24 slots shared by the 10 task types its
// handlers serve (a minimum of 1 each; the agent's allocator gives the rest to the
// types with queued tasks, so one busy type gets up to 16).
func startRealAgent(t testing.TB, serverAddr, id, record string) *proc {
	t.Helper()
	return startRealAgentTotal(t, serverAddr, id, record, 24)
}

// startRealAgentTotal is startRealAgent with total slots instead of 24.
func startRealAgentTotal(t testing.TB, serverAddr, id, record string, total int) *proc {
	t.Helper()
	needBins(t)
	args := []string{"-server", serverAddr, "-id", id, "-total", strconv.Itoa(total),
		"-handler", "testhandler=" + bins.testhandler, "-handler", "checksum=" + bins.checksum}
	if record != "" {
		args = append(args, "-record", record)
	}
	if dir := os.Getenv("PADDOCK_AGENT_CPUPROFILE"); dir != "" { // profile the agent process: a directory
		args = append(args, "-cpuprofile", filepath.Join(dir, "agent-"+id+".pprof"))
	}
	p, _ := startProc(t, "agent-"+id, "TESTAGENT READY", bins.agent, args...)
	return p
}

type recorded struct {
	rep     *agentv1.Report
	outcome string
}

func readRecords(t testing.TB, path string) []recorded {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []recorded
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var r struct {
			Report  json.RawMessage `json:"report"`
			Outcome string          `json:"outcome"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		rep := &agentv1.Report{}
		if err := protojson.Unmarshal(r.Report, rep); err != nil {
			t.Fatal(err)
		}
		out = append(out, recorded{rep, r.Outcome})
	}
	return out
}

// rawSession is a hand-driven agent session, for replaying reports.
type rawSession struct {
	stream agentv1.AgentService_SessionClient
	cancel func()
}

func openRaw(t testing.TB, addr, agentID string) *rawSession {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return session.TCPDialer(addr)(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := agentv1.NewAgentServiceClient(cc).Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// It serves a type nobody submits, so it is never assigned work.
	if err := stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Register{Register: &agentv1.Register{
		AgentId: agentID, ProtocolVersion: 1, Types: []*agentv1.TaskType{{Name: "replay.none", Slots: 1}}}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetRegistered() == nil {
		t.Fatalf("raw register: %v %v", m, err)
	}
	rs := &rawSession{stream: stream, cancel: func() { cancel(); cc.Close() }}
	t.Cleanup(rs.cancel)
	return rs
}

func (rs *rawSession) report(t testing.TB, r *agentv1.Report) *agentv1.ReportAck {
	t.Helper()
	if err := rs.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: r}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := rs.stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if a := m.GetReportAck(); a != nil {
			return a
		}
	}
}

// snapshot is what must not change when reports are replayed.
func snapshot(t testing.TB, st store.Store, ids []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, id := range ids {
		tk, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		att, _ := st.Attempts(context.Background(), id)
		out[id] = fmt.Sprintf("%s|%d|%d|%s|%x|%s|%d|%d", tk.State, tk.Attempt, tk.LeaseID, tk.AgentID, sha256.Sum256(tk.Output), tk.Error, tk.UpdatedAt.UnixMilli(), len(att))
	}
	return out
}

// waitAllTerminal polls the store until every task is terminal.
func waitAllTerminal(t testing.TB, st store.Store, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		cs, err := st.Counts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		live := int64(0)
		for _, c := range cs {
			if !c.State.Terminal() {
				live += c.N
			}
		}
		if live == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks still live after %v: %v", live, d, cs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func spec3(i int) *paddockv1.TaskSpec {
	switch i % 3 {
	case 0:
		return &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte(fmt.Sprintf("echo-%d", i))}
	case 1:
		return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("1ms")}
	default:
		return &paddockv1.TaskSpec{Type: "checksum", Inputs: map[string][]byte{"blob": []byte(fmt.Sprintf("data-%d", i))}}
	}
}

func submitMany(t testing.TB, c paddockv1connect.TaskServiceClient, n int, spec func(int) *paddockv1.TaskSpec) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				r, err := c.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec(i)}))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = r.Msg.GetTask().GetId()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("submit: %v", err)
	}
	return ids
}

// checkExactlyOnce asserts every task succeeded with exactly one successful attempt and
// that no agent had more than one report accepted for a task.
func checkExactlyOnce(t testing.TB, st store.Store, ids []string, records ...string) {
	t.Helper()
	accepted := map[string]int{}
	for _, rf := range records {
		for _, r := range readRecords(t, rf) {
			if r.outcome == agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED.String() && r.rep.GetStatus() == agentv1.Status_STATUS_SUCCEEDED {
				accepted[r.rep.GetTaskId()]++
			}
		}
	}
	bad := 0
	for i, id := range ids {
		tk, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		att, _ := st.Attempts(context.Background(), id)
		ok := 0
		for _, a := range att {
			if a.State == store.Succeeded {
				ok++
			}
		}
		if tk.State != store.Succeeded || ok != 1 || accepted[id] > 1 {
			bad++
			if bad < 10 {
				t.Errorf("task %d (%s): state %s, %d successful attempts of %d, %d accepted reports, error %q", i, id, tk.State, ok, len(att), accepted[id], tk.Error)
			}
			continue
		}
		if i%3 == 0 && string(tk.Output) != fmt.Sprintf("echo-%d", i) {
			t.Errorf("task %d output %q", i, tk.Output)
		}
		sum := sha256.Sum256(tk.Output)
		if tk.OutputSHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("task %d archived sha256 %s does not match its output", i, tk.OutputSHA256)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d tasks not completed exactly once", bad, len(ids))
	}
}

func TestRealAgents10000Tasks(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	ts := startServer(t, fastConfig())
	dir := t.TempDir()
	r1, r2 := filepath.Join(dir, "a1.jsonl"), filepath.Join(dir, "a2.jsonl")
	p1 := startRealAgent(t, ts.agentAddr, "real-1", r1)
	p2 := startRealAgent(t, ts.agentAddr, "real-2", r2)
	start := time.Now()
	ids := submitMany(t, ts.tasks, n, spec3)
	waitAllTerminal(t, ts.srv.Store(), 10*time.Minute)
	t.Logf("%d tasks across 3 types on 2 agent processes: %v (%.0f tasks/s)", n, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
	// Let the last acks reach the agents' records (a loaded machine takes a while; a
	// session lost under load may leave a few reports unrecorded: the store is the
	// judge of exactly-once, the records only feed the replay below).
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if len(readRecords(t, r1))+len(readRecords(t, r2)) >= n {
			break
		}
	}
	checkExactlyOnce(t, ts.srv.Store(), ids, r1, r2)

	// Replay every report twice: each is acknowledged as a duplicate and no task changes.
	// (The agents are stopped first: the replaying session takes over their ids.)
	p1.kill9()
	p2.kill9()
	before := snapshot(t, ts.srv.Store(), ids)
	recs := append(readRecords(t, r1), readRecords(t, r2)...)
	if len(recs) < n/2 {
		t.Fatalf("only %d reports recorded for %d tasks", len(recs), n)
	} else if len(recs) < n {
		t.Logf("%d reports recorded for %d tasks (sessions lost under load); replaying those", len(recs), n)
	}
	byAgent := map[string][]recorded{}
	for _, r := range recs {
		tk, _ := ts.srv.Store().Get(context.Background(), r.rep.GetTaskId())
		byAgent[tk.AgentID] = append(byAgent[tk.AgentID], r)
	}
	for agentID, rs := range byAgent {
		raw := openRaw(t, ts.agentAddr, agentID)
		for _, r := range rs {
			for k := 0; k < 2; k++ {
				ack := raw.report(t, r.rep)
				if ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_DUPLICATE {
					t.Fatalf("replayed report of task %s: %v %s, want DUPLICATE", r.rep.GetTaskId(), ack.GetOutcome(), ack.GetError())
				}
			}
		}
		raw.cancel()
	}
	after := snapshot(t, ts.srv.Store(), ids)
	for id, b := range before {
		if after[id] != b {
			t.Fatalf("task %s changed on replay:\n before %s\n after  %s", id, b, after[id])
		}
	}
}

func TestRealAgentKilledMidTask(t *testing.T) {
	ts := startServer(t, fastConfig())
	dir := t.TempDir()
	a := startRealAgent(t, ts.agentAddr, "doomed", filepath.Join(dir, "doomed.jsonl"))
	const n = 6
	ids := submitMany(t, ts.tasks, n, func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("2s"), MaxAttempts: 3}
	})
	// Wait until every task runs on the doomed agent.
	deadline := time.Now().Add(30 * time.Second)
	for {
		running := 0
		for _, id := range ids {
			tk, _ := ts.srv.Store().Get(context.Background(), id)
			if tk.State == store.Running && tk.AgentID == "doomed" {
				running++
			}
		}
		if running == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d tasks running on the doomed agent", running, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := map[string]store.Task{}
	for _, id := range ids {
		first[id], _ = ts.srv.Store().Get(context.Background(), id)
	}
	// Kill first, then start the survivor: started first, a survivor that took longer
	// than the tasks' 2 s to start on a loaded machine let doomed finish them.
	a.kill9()
	survivor := filepath.Join(dir, "survivor.jsonl")
	startRealAgent(t, ts.agentAddr, "survivor", survivor)
	waitAllTerminal(t, ts.srv.Store(), 60*time.Second)
	for _, id := range ids {
		tk, _ := ts.srv.Store().Get(context.Background(), id)
		att, _ := ts.srv.Store().Attempts(context.Background(), id)
		if tk.State != store.Succeeded || tk.AgentID != "survivor" || len(att) != 2 || att[0].AgentID != "doomed" ||
			att[0].FailureKind != store.LeaseExpired || att[1].FailureKind != store.NoFailure {
			t.Fatalf("task %s: %+v attempts %+v; want succeeded on survivor after doomed's lease expired", id, tk, att)
		}
	}
	// The killed agent's late reports are refused and change nothing.
	before := snapshot(t, ts.srv.Store(), ids)
	raw := openRaw(t, ts.agentAddr, "doomed")
	for _, id := range ids {
		out := []byte("slept 2s (late)")
		sum := sha256.Sum256(out)
		ack := raw.report(t, &agentv1.Report{TaskId: id, LeaseId: first[id].LeaseID, Status: agentv1.Status_STATUS_SUCCEEDED,
			Output: out, Sha256: hex.EncodeToString(sum[:])})
		if ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_SUPERSEDED {
			t.Fatalf("late report of %s: %v %s, want SUPERSEDED", id, ack.GetOutcome(), ack.GetError())
		}
	}
	after := snapshot(t, ts.srv.Store(), ids)
	for id, b := range before {
		if after[id] != b {
			t.Fatalf("task %s changed on a late report:\n before %s\n after  %s", id, b, after[id])
		}
	}
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestRealServerKill9(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "paddock.db")
	agentAddr, clientAddr := freeAddr(t), freeAddr(t)
	startSrv := func() *proc {
		p, _ := startProc(t, "server", "TESTSERVER READY", bins.server, "-db", db, "-agent-listen", agentAddr, "-client-listen", clientAddr)
		return p
	}
	srv := startSrv()
	client := paddockv1connect.NewTaskServiceClient(&httpClient, "http://"+clientAddr)
	r1, r2 := filepath.Join(dir, "a1.jsonl"), filepath.Join(dir, "a2.jsonl")
	startRealAgent(t, agentAddr, "k1", r1)
	startRealAgent(t, agentAddr, "k2", r2)
	const n = 400
	ids := submitMany(t, client, n, func(i int) *paddockv1.TaskSpec {
		if i%3 == 0 {
			return spec3(i)
		}
		return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("300ms")}
	})
	// Kill -9 while tasks are queued, leased and running: once some run, count the
	// states (one List per state: 400 Gets took long enough for the queue to drain).
	count := func(st paddockv1.State) int {
		r, err := client.List(context.Background(), connect.NewRequest(&paddockv1.ListRequest{State: st, Limit: 1000}))
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Msg.GetTasks())
	}
	for deadline := time.Now().Add(30 * time.Second); count(paddockv1.State_STATE_RUNNING) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no task running 30s after the submits")
		}
	}
	states := map[paddockv1.State]int{}
	for _, st := range []paddockv1.State{paddockv1.State_STATE_QUEUED, paddockv1.State_STATE_LEASED, paddockv1.State_STATE_RUNNING} {
		states[st] = count(st)
	}
	t.Logf("before kill -9: %v", states)
	if states[paddockv1.State_STATE_QUEUED] == 0 || states[paddockv1.State_STATE_RUNNING]+states[paddockv1.State_STATE_LEASED] == 0 {
		t.Fatalf("want queued and running tasks at the kill, have %v", states)
	}
	srv.kill9()
	time.Sleep(500 * time.Millisecond) // agents finish some tasks while the server is down
	startSrv()
	// Read the result from the same file the restarted server uses.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		live := 0
		for _, id := range ids {
			r, err := client.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
			if err != nil {
				t.Fatalf("task %s after restart: %v", id, err)
			}
			if s := r.Msg.GetTask().GetState(); s < paddockv1.State_STATE_SUCCEEDED {
				live++
			}
		}
		if live == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks still live 3 minutes after the restart", live)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	st := openStoreRO(t, db)
	checkExactlyOnce(t, st, ids, r1, r2)
}
