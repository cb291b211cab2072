package sched_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// fillWithBatch submits n batch test.sleep tasks of d (max_attempts 1) and waits until
// every slot the agents give test.sleep is busy with them (no ready task can start).
func fillWithBatch(t testing.TB, ts *testServer, n int, d string) []string {
	t.Helper()
	return fillSlots(t, ts, "test.sleep", n, d)
}

// fillSlots submits n batch tasks of typ with payload (max_attempts 1) and waits until
// every slot the agents give typ is busy (no ready task of typ can start).
func fillSlots(t testing.TB, ts *testServer, typ string, n int, payload string) []string {
	t.Helper()
	ids := submitMany(t, ts.tasks, n, func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: typ, Payload: []byte(payload), Class: paddockv1.Class_CLASS_BATCH, MaxAttempts: 1}
	})
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		busy, slots := typeSlots(ts, typ)
		if slots > 1 && busy >= slots {
			return ids
		}
		if time.Now().After(end) {
			states := map[string]int{}
			for _, id := range ids {
				st, err := ts.srv.Store().Get(context.Background(), id)
				states[fmt.Sprintf("%s %s", st.State, st.Error)+fmt.Sprint(err)]++
			}
			t.Fatalf("the batch tasks never filled the slots of %s: %d of %d busy; the tasks: %v; the agents: %+v", typ, busy, slots, states, ts.srv.Agents())
		}
	}
}

// typeSlots sums, over the agents, the running tasks and the slots of typ.
func typeSlots(ts *testServer, typ string) (busy, slots int) {
	for _, a := range ts.srv.Agents() {
		for _, ty := range a.Types {
			if ty.Name == typ {
				busy, slots = busy+ty.Running, slots+ty.Slots
			}
		}
	}
	return busy, slots
}

// TestPreemptHandsOverWithoutHeartbeat: agents heartbeat once in 10 minutes, so a
// preempted slot freed only by a heartbeat would stay booked past the test's waits.
// Batch test.logwait tasks fill every slot of their type and cannot end on their own
// (they wait for a file the test creates only at the end); online tasks submitted
// then must start in the slots of the batch tasks preempted for them, handed over
// with the cancel (paddock_preempt_handovers_total counts each). Then the file
// appears: every batch task succeeds, each charged exactly one attempt, the preempted
// ones with their preempted attempt not charged (max_attempts 1).
func TestPreemptHandsOverWithoutHeartbeat(t *testing.T) {
	cfg := fastConfig()
	cfg.HeartbeatInterval, cfg.LeaseTTL = 10*time.Minute, 30*time.Minute
	ts := startServer(t, cfg)
	startRealAgent(t, ts.agentAddr, "ho1", "")
	startRealAgent(t, ts.agentAddr, "ho2", "")
	dir := t.TempDir()
	release, done := filepath.Join(dir, "release"), filepath.Join(dir, "done")
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Minute); len(ts.srv.Agents()) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the agents never registered: %+v", ts.srv.Agents())
		}
	}
	_, slots := typeSlots(ts, "test.logwait")
	batch := fillSlots(t, ts, "test.logwait", slots, release)
	const nOnline = 3
	online := submitMany(t, ts.tasks, nOnline, func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.logwait", Payload: []byte(done), Class: paddockv1.Class_CLASS_ONLINE}
	})
	for _, id := range online {
		if tk := wait(t, ts, id, 3*time.Minute); tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("online task %s: %v %s (no heartbeat comes to free a preempted slot: only a hand-over starts it)", id, tk.GetState(), tk.GetError())
		}
	}
	// No batch task has ended: their slots came from nothing but the hand-over.
	for _, id := range batch {
		st, err := ts.srv.Store().Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State.Terminal() {
			t.Fatalf("batch task %s ended (%s) before its release file existed", id, st.State)
		}
	}
	// At least the first online task started through a hand-over. The later ones may
	// have taken the slot an earlier online task freed when it ended (they end at once),
	// so there are 1..nOnline hand-overs, one preempted batch attempt for each.
	handovers := int(metricSum(t, ts, "paddock_preempt_handovers_total{", `type="test.logwait"`))
	if handovers < 1 || handovers > nOnline {
		t.Fatalf("paddock_preempt_handovers_total counts %d hand-overs for %d online tasks, want 1..%d", handovers, nOnline, nOnline)
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if preempted := checkBatchSucceeded(t, ts, batch); preempted < handovers {
		t.Fatalf("%d batch attempts preempted for %d hand-overs, want at least one each", preempted, handovers)
	}
}

// checkBatchSucceeded waits for every batch task in ids to succeed, checks that each
// was charged exactly one attempt (its preempted ones not charged), and returns the
// number of preempted attempts.
func checkBatchSucceeded(t *testing.T, ts *testServer, ids []string) int {
	t.Helper()
	preempted := 0
	for _, id := range ids {
		tk := wait(t, ts, id, 5*time.Minute)
		if tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("batch task %s: %v after %d attempts: %s", id, tk.GetState(), tk.GetAttempt(), tk.GetError())
		}
		g, err := ts.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		charged := 0
		for _, a := range g.Msg.GetTask().GetAttempts() {
			if a.GetFailureKind() == paddockv1.FailureKind_FAILURE_KIND_PREEMPTED {
				preempted++
			} else {
				charged++
			}
		}
		st, _ := ts.srv.Store().Get(context.Background(), id)
		if charged != 1 || st.Attempt-st.Preemptions != 1 {
			t.Fatalf("batch task %s: %d attempts (%d preemptions), %d charged; want exactly 1 charged", id, st.Attempt, st.Preemptions, charged)
		}
	}
	return preempted
}

// metricSum sums the /metrics samples whose line starts with prefix and contains label.
func metricSum(t *testing.T, ts *testServer, prefix, label string) float64 {
	t.Helper()
	resp, err := httpClient.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var sum float64
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, label) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			sum += v
		}
	}
	return sum
}

// TestPreemptOnlineTakesBatchSlot: two real agent processes whose test.logwait slots
// are all busy with batch tasks (max_attempts 1) that cannot end on their own (each
// waits for a release file), with more queued than the agents could ever give the type,
// so no slot frees or grows; online tasks submitted then preempt batch tasks and run;
// once released, every preempted batch task still succeeds, its preempted attempt not
// charged (with max_attempts 1, a charged preemption would leave it dead).
func TestPreemptOnlineTakesBatchSlot(t *testing.T) {
	ts := startServer(t, fastConfig())
	startRealAgent(t, ts.agentAddr, "p1", "")
	startRealAgent(t, ts.agentAddr, "p2", "")
	dir := t.TempDir()
	release, done := filepath.Join(dir, "release"), filepath.Join(dir, "done")
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Minute); len(ts.srv.Agents()) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the agents never registered: %+v", ts.srv.Agents())
		}
	}
	batch := fillSlots(t, ts, "test.logwait", 60, release)
	// The agents grow a busy type's slots from their heartbeats: wait until the slots
	// stay the same for 2 s with every one of them busy.
	for end, last, since := time.Now().Add(2*time.Minute), -1, time.Now(); ; time.Sleep(50 * time.Millisecond) {
		busy, slots := typeSlots(ts, "test.logwait")
		if slots != last || busy < slots {
			last, since = slots, time.Now()
		}
		if time.Since(since) > 2*time.Second {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the slots of test.logwait never settled: %d of %d busy", busy, slots)
		}
	}
	online := submitMany(t, ts.tasks, 4, func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.logwait", Payload: []byte(done), Class: paddockv1.Class_CLASS_ONLINE}
	})
	for _, id := range online {
		if tk := wait(t, ts, id, 3*time.Minute); tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("online task %s: %v %s", id, tk.GetState(), tk.GetError())
		}
	}
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	preempted := checkBatchSucceeded(t, ts, batch)
	if preempted < len(online) {
		t.Fatalf("%d batch attempts preempted for %d online tasks, want at least one each", preempted, len(online))
	}
	// /metrics counts every online start against the SLA (met or missed).
	if starts := metricSum(t, ts, "paddock_online_starts_total{", `type="test.logwait"`); int(starts) < len(online) {
		t.Fatalf("/metrics counts %v online starts of test.logwait against the SLA, want at least %d", starts, len(online))
	}
	t.Logf("%d online tasks ran by preempting %d batch attempts; all %d batch tasks succeeded, none charged for a preemption", len(online), preempted, len(batch))
}

// BenchmarkOnlineStart: the submit→start p99 of online tasks (test.sleep 10ms, one at
// a time) on an idle cluster of two real agent processes, and with batch tasks filling
// every slot (they are preempted), in the same run; x-idle is loaded p99 / idle p99.
// PADDOCK_BENCH_LAT=1 logs every latency, and for each start over 30 ms when its lease
// was written (the server's part) and when the agent's ack came (StartedAt).
//
//	go test -run '^$' -bench OnlineStart -benchtime 40x ./sched
func BenchmarkOnlineStart(b *testing.B) {
	needBins(b)
	ts := startServer(b, fastConfig())
	startRealAgent(b, ts.agentAddr, "o1", "")
	startRealAgent(b, ts.agentAddr, "o2", "")
	p99 := func(b *testing.B) time.Duration {
		b.Helper()
		var lat, lease []time.Duration // submit → start (the agent's ack), submit → lease written
		for i := 0; i < b.N; i++ {
			tk := submit(b, ts, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("10ms"), Class: paddockv1.Class_CLASS_ONLINE})
			wait(b, ts, tk.GetId(), 3*time.Minute)
			st, err := ts.srv.Store().Get(context.Background(), tk.GetId())
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, st.StartedAt.Sub(st.CreatedAt))
			lease = append(lease, st.LeasedAt.Sub(st.CreatedAt))
			if os.Getenv("PADDOCK_BENCH_LAT") != "" && st.StartedAt.Sub(st.CreatedAt) > 30*time.Millisecond {
				b.Logf("slow: leased after %v, started after %v, agent %s attempt %d", st.LeasedAt.Sub(st.CreatedAt), st.StartedAt.Sub(st.CreatedAt), st.AgentID, st.Attempt)
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		sort.Slice(lease, func(i, j int) bool { return lease[i] < lease[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-p50")
		// The server's part: submit → lease written (store times, whole milliseconds).
		b.ReportMetric(float64(lease[len(lease)/2].Microseconds())/1000, "ms-lease-p50")
		b.ReportMetric(float64(lease[len(lease)*99/100].Microseconds())/1000, "ms-lease-p99")
		if os.Getenv("PADDOCK_BENCH_LAT") != "" {
			b.Logf("latencies: %v", lat)
		}
		return lat[len(lat)*99/100]
	}
	var idle time.Duration
	b.Run("idle", func(b *testing.B) {
		idle = p99(b)
		b.ReportMetric(float64(idle.Microseconds())/1000, "ms-p99")
	})
	b.Run("batch-full", func(b *testing.B) {
		fillWithBatch(b, ts, 400, "3s")
		loaded := p99(b)
		b.ReportMetric(float64(loaded.Microseconds())/1000, "ms-p99")
		b.ReportMetric(float64(idle.Microseconds())/1000, "ms-p99-idle")
		if idle > 0 {
			b.ReportMetric(float64(loaded)/float64(idle), "x-idle")
		}
	})
}
