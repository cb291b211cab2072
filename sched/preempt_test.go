package sched_test

import (
	"context"
	"io"
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
	ids := submitMany(t, ts.tasks, n, func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte(d), Class: paddockv1.Class_CLASS_BATCH, MaxAttempts: 1}
	})
	for end := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		busy, slots := 0, 0
		for _, a := range ts.srv.Agents() {
			for _, ty := range a.Types {
				if ty.Name == "test.sleep" {
					busy, slots = busy+ty.Running, slots+ty.Slots
				}
			}
		}
		if slots > 1 && busy >= slots {
			return ids
		}
		if time.Now().After(end) {
			t.Fatalf("the batch tasks never filled the slots: %d of %d busy", busy, slots)
		}
	}
}

// TestPreemptOnlineTakesBatchSlot: two real agent processes whose test.sleep slots are
// all busy with batch tasks (max_attempts 1); online tasks submitted then preempt batch
// tasks and run; every preempted batch task still succeeds, its preempted attempt not
// charged (with max_attempts 1, a charged preemption would leave it dead).
func TestPreemptOnlineTakesBatchSlot(t *testing.T) {
	ts := startServer(t, fastConfig())
	startRealAgent(t, ts.agentAddr, "p1", "")
	startRealAgent(t, ts.agentAddr, "p2", "")
	batch := fillWithBatch(t, ts, 60, "2s")
	online := submitMany(t, ts.tasks, 4, func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("10ms"), Class: paddockv1.Class_CLASS_ONLINE}
	})
	for _, id := range online {
		if tk := wait(t, ts, id, 3*time.Minute); tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("online task %s: %v %s", id, tk.GetState(), tk.GetError())
		}
	}
	preempted := 0
	for _, id := range batch {
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
	if preempted < len(online) {
		t.Fatalf("%d batch attempts preempted for %d online tasks, want at least one each", preempted, len(online))
	}
	// /metrics counts every online start against the SLA (met or missed).
	resp, err := httpClient.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var starts float64
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, `paddock_online_starts_total{`) && strings.Contains(l, `type="test.sleep"`) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			starts += v
		}
	}
	if int(starts) < len(online) {
		t.Fatalf("/metrics counts %v online starts of test.sleep against the SLA, want at least %d:\n%s", starts, len(online), body)
	}
	t.Logf("%d online tasks ran by preempting %d batch attempts; all %d batch tasks succeeded, none charged for a preemption", len(online), preempted, len(batch))
}

// BenchmarkOnlineStart: the submit→start p99 of online tasks (test.sleep 10ms, one at
// a time) on an idle cluster of two real agent processes, and with batch tasks filling
// every slot (they are preempted), in the same run; x-idle is loaded p99 / idle p99.
//
//	go test -run '^$' -bench OnlineStart -benchtime 40x ./sched
func BenchmarkOnlineStart(b *testing.B) {
	needBins(b)
	ts := startServer(b, fastConfig())
	startRealAgent(b, ts.agentAddr, "o1", "")
	startRealAgent(b, ts.agentAddr, "o2", "")
	p99 := func(b *testing.B) time.Duration {
		var lat []time.Duration
		for i := 0; i < b.N; i++ {
			tk := submit(b, ts, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("10ms"), Class: paddockv1.Class_CLASS_ONLINE})
			wait(b, ts, tk.GetId(), 3*time.Minute)
			st, err := ts.srv.Store().Get(context.Background(), tk.GetId())
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, st.StartedAt.Sub(st.CreatedAt))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
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
