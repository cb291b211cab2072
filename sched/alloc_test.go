package sched_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// allocExec runs every task for its payload's duration, counting how many of each
// type run at once (the agent-side truth the server's dispatch must respect).
type allocExec struct {
	types []session.TaskType

	mu      sync.Mutex
	runs    map[string]int // by task id
	now     map[string]int // running by type
	maxAll  int            // most running at once, all types
	doneAll map[string]int // finished by type
}

func (e *allocExec) Types() []session.TaskType { return e.types }

func (e *allocExec) Execute(ctx context.Context, t session.Task) session.Result {
	e.mu.Lock()
	e.runs[t.ID]++
	e.now[t.Type]++
	all := 0
	for _, n := range e.now {
		all += n
	}
	e.maxAll = max(e.maxAll, all)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.now[t.Type]--
		e.doneAll[t.Type]++
		e.mu.Unlock()
	}()
	d, _ := time.ParseDuration(string(t.Payload))
	select {
	case <-time.After(d):
		return session.Result{Output: []byte(t.Type + " ok")}
	case <-ctx.Done():
		return session.Result{Error: "cancelled", Retryable: true}
	}
}

// TestAllocationFollowsQueueDelay: one agent with 6 slots serves two task types with
// the same service time (100ms) but different tolerable delays (tight 100ms, loose
// 2s), under a backlog of both. The server measures each type's queuing delay and
// sends it in answer to the agent's heartbeats; the agent's allocator gives the
// tighter type more of its slots; the server dispatches against those limits. Checked
// from the server's view (ListAgents) and from the agent's (tasks running at once):
// the tighter type gets more slots, neither type drops below its minimum of 1 or is
// starved, the limits always add up to 6, the agent never runs more than 6 tasks,
// and every task succeeds exactly once. /metrics and Status show the allocation.
func TestAllocationFollowsQueueDelay(t *testing.T) {
	const (
		total   = 6
		perType = 150
		service = "100ms"
	)
	ts := startServer(t, fastConfig())
	ex := &allocExec{types: []session.TaskType{{Name: "loose", Version: "1"}, {Name: "tight", Version: "1"}},
		runs: map[string]int{}, now: map[string]int{}, doneAll: map[string]int{}}
	sess, err := session.New(session.Config{AgentID: "alloc-1", Host: "test", Dial: session.TCPDialer(ts.agentAddr),
		ReconnectMin: 20 * time.Millisecond, TotalSlots: total,
		TolerableDelay: map[string]time.Duration{"tight": 100 * time.Millisecond, "loose": 2 * time.Second}}, ex)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sess.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Wait for the agent, then queue both backlogs at once (interleaved).
	deadline := time.Now().Add(10 * time.Second)
	for len(listAgents(t, ts)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the agent never registered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ids := submitMany(t, ts.tasks, 2*perType, func(i int) *paddockv1.TaskSpec {
		typ := "tight"
		if i%2 == 1 {
			typ = "loose"
		}
		return &paddockv1.TaskSpec{Type: typ, Payload: []byte(service)}
	})

	// Sample the allocation the server dispatches against, and what the agent runs,
	// while both types still have tasks queued.
	type sample struct{ tightLimit, looseLimit, tightRun, looseRun int }
	var samples []sample
	var sawDelay bool
	for {
		q := queued(t, ts)
		if q["tight"] == 0 || q["loose"] == 0 {
			break
		}
		ag := listAgents(t, ts)
		if len(ag) != 1 {
			t.Fatalf("%d agents listed, want 1", len(ag))
		}
		var s sample
		sum := 0
		for _, ty := range ag[0].GetTypes() {
			if ty.GetSlots() < 1 || ty.GetSlots() < ty.GetMinSlots() {
				t.Fatalf("type %s limited to %d slots, below its minimum %d", ty.GetName(), ty.GetSlots(), ty.GetMinSlots())
			}
			sum += int(ty.GetSlots())
			switch ty.GetName() {
			case "tight":
				s.tightLimit = int(ty.GetSlots())
				if ty.GetTolerableDelayMs() != 100 {
					t.Fatalf("tight's tolerable delay shows as %dms, want 100ms", ty.GetTolerableDelayMs())
				}
			case "loose":
				s.looseLimit = int(ty.GetSlots())
			}
		}
		if sum != total || ag[0].GetTotalSlots() != total {
			t.Fatalf("limits add up to %d (total_slots %d), want %d: %v", sum, ag[0].GetTotalSlots(), total, ag[0].GetTypes())
		}
		ex.mu.Lock()
		s.tightRun, s.looseRun = ex.now["tight"], ex.now["loose"]
		ex.mu.Unlock()
		samples = append(samples, s)
		if !sawDelay {
			st, err := ts.cluster.Status(context.Background(), connect.NewRequest(&paddockv1.StatusRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			for _, qd := range st.Msg.GetQueueDelays() {
				if qd.GetType() == "tight" && qd.GetDelayMs() > 0 && qd.GetReady() > 0 {
					sawDelay = true
				}
			}
		}
		if len(samples) > 2000 {
			t.Fatal("both backlogs still queued after 2000 samples")
		}
		time.Sleep(25 * time.Millisecond)
	}
	ex.mu.Lock()
	looseDoneDuringBacklog := ex.doneAll["loose"]
	ex.mu.Unlock()

	waitAllTerminal(t, ts.srv.Store(), 2*time.Minute)
	checkSucceededOnce(t, ts, ids, ex)

	if len(samples) < 10 {
		t.Fatalf("only %d samples while both types were backlogged: too few to judge", len(samples))
	}
	var tl, ll, tr, lr float64
	for _, s := range samples {
		tl += float64(s.tightLimit)
		ll += float64(s.looseLimit)
		tr += float64(s.tightRun)
		lr += float64(s.looseRun)
	}
	n := float64(len(samples))
	t.Logf("while both were backlogged (%d samples): tight limit %.2f, loose limit %.2f on average; tight %.2f, loose %.2f running on the agent; %d loose tasks finished meanwhile; most running at once %d",
		len(samples), tl/n, ll/n, tr/n, lr/n, looseDoneDuringBacklog, ex.maxAll)
	if tl/n < ll/n+2 {
		t.Errorf("tight type averaged %.2f slots, loose %.2f: want the tighter type to get clearly more", tl/n, ll/n)
	}
	if tr/n <= lr/n {
		t.Errorf("the agent ran %.2f tight and %.2f loose tasks at once on average: want more of the tighter type", tr/n, lr/n)
	}
	if looseDoneDuringBacklog == 0 {
		t.Error("no loose task finished while the tight backlog lasted: the loose type starved")
	}
	if ex.maxAll > total {
		t.Errorf("the agent ran %d tasks at once, more than its %d slots", ex.maxAll, total)
	}
	if !sawDelay {
		t.Error("Status never showed a queuing delay for the backlogged tight type")
	}

	// Operators see the allocation in /metrics.
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`paddock_agent_type_slots{agent="alloc-1",type="tight"}`, `paddock_agent_type_slots{agent="alloc-1",type="loose"}`,
		`paddock_agent_type_min_slots{agent="alloc-1",type="loose"} 1`, `paddock_agent_total_slots{agent="alloc-1"} 6`,
		`paddock_agent_type_running{agent="alloc-1",type="tight"}`, `paddock_queue_delay_seconds{type="tight"}`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func listAgents(t testing.TB, ts *testServer) []*paddockv1.Agent {
	t.Helper()
	r, err := ts.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	return r.Msg.GetAgents()
}

// queued counts queued tasks by type.
func queued(t testing.TB, ts *testServer) map[string]int64 {
	t.Helper()
	cs, err := ts.srv.Store().Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, c := range cs {
		if c.State == store.Queued {
			out[c.Type] += c.N
		}
	}
	return out
}

// checkSucceededOnce asserts every task succeeded on its only attempt and ran once.
func checkSucceededOnce(t testing.TB, ts *testServer, ids []string, ex *allocExec) {
	t.Helper()
	ex.mu.Lock()
	defer ex.mu.Unlock()
	for i, id := range ids {
		tk, err := ts.srv.Store().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != store.Succeeded || tk.Attempt != 1 || ex.runs[id] != 1 || string(tk.Output) != fmt.Sprintf("%s ok", tk.Type) {
			t.Fatalf("task %d (%s): state %s after %d attempts, ran %d times, output %q", i, id, tk.State, tk.Attempt, ex.runs[id], tk.Output)
		}
	}
}

// TestRealAgentAllocation is the same check through the real test agent process
// (agent/session over TCP, real handler subprocesses): 17 slots over the 11 types the
// handlers serve (a minimum of 1 each), test.sleep tolerating 50ms of queuing and
// every other type 5s. Under a backlog of test.sleep (100ms each) and of test.echo,
// test.sleep gets most of the extra slots, test.echo keeps its minimum and keeps
// finishing tasks, no type ever drops below 1, and every task succeeds exactly once.
func TestRealAgentAllocation(t *testing.T) {
	needBins(t)
	ts := startServer(t, fastConfig())
	// Queue both backlogs first, then start the agent: it finds both types waiting.
	const sleeps, echoes = 100, 1500
	ids := submitMany(t, ts.tasks, sleeps+echoes, func(i int) *paddockv1.TaskSpec {
		if i < sleeps {
			return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("100ms")}
		}
		return &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte(fmt.Sprint(i))}
	})
	rec := t.TempDir() + "/alloc.jsonl"
	startProc(t, "agent-alloc", "TESTAGENT READY", bins.agent, "-server", ts.agentAddr, "-id", "alloc-real", "-record", rec,
		"-total", "17", "-tolerable", "test.sleep=50ms", "-default-tolerable", "5s",
		"-handler", "testhandler="+bins.testhandler, "-handler", "checksum="+bins.checksum)
	deadline := time.Now().Add(30 * time.Second)
	for len(listAgents(t, ts)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the agent never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var sleepSum, echoSum, n float64
	echoDoneAtStart := int64(-1)
	var echoDone int64
	for {
		q := queued(t, ts)
		if q["test.sleep"] == 0 || q["test.echo"] == 0 {
			break
		}
		ag := listAgents(t, ts)
		sum := 0
		for _, ty := range ag[0].GetTypes() {
			if ty.GetSlots() < 1 {
				t.Fatalf("type %s limited to %d slots", ty.GetName(), ty.GetSlots())
			}
			sum += int(ty.GetSlots())
			switch ty.GetName() {
			case "test.sleep":
				sleepSum += float64(ty.GetSlots())
			case "test.echo":
				echoSum += float64(ty.GetSlots())
			}
		}
		if sum != 17 || len(ag[0].GetTypes()) != 11 {
			t.Fatalf("%d types with limits adding up to %d, want 11 types and 17: %v", len(ag[0].GetTypes()), sum, ag[0].GetTypes())
		}
		n++
		done := int64(echoes) - q["test.echo"]
		if echoDoneAtStart < 0 {
			echoDoneAtStart = done
		}
		echoDone = done
		time.Sleep(25 * time.Millisecond)
	}
	waitAllTerminal(t, ts.srv.Store(), 3*time.Minute)
	time.Sleep(300 * time.Millisecond) // let the last acks reach the agent's record
	accepted := map[string]int{}
	for _, r := range readRecords(t, rec) {
		if r.outcome == "REPORT_OUTCOME_ACCEPTED" {
			accepted[r.rep.GetTaskId()]++
		}
	}
	for i, id := range ids {
		tk, err := ts.srv.Store().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != store.Succeeded || tk.Attempt != 1 || accepted[id] != 1 {
			t.Fatalf("task %d (%s, %s): state %s after %d attempts, %d accepted reports", i, id, tk.Type, tk.State, tk.Attempt, accepted[id])
		}
	}
	if n < 5 {
		t.Fatalf("only %.0f samples while both types were backlogged: too few to judge", n)
	}
	t.Logf("while both were backlogged (%.0f samples): test.sleep limit %.2f, test.echo limit %.2f on average; %d echo tasks dispatched meanwhile",
		n, sleepSum/n, echoSum/n, echoDone-echoDoneAtStart)
	if sleepSum/n < echoSum/n+2 {
		t.Errorf("test.sleep (50ms tolerable) averaged %.2f slots, test.echo (5s) %.2f: want the tighter type to get clearly more", sleepSum/n, echoSum/n)
	}
	if echoDone-echoDoneAtStart <= 0 {
		t.Error("no test.echo task left the queue while test.sleep was backlogged: test.echo starved")
	}
}
