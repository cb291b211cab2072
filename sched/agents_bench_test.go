package sched_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// BenchmarkManyAgents: the dispatch rate with 1,000 connected agents against the rate with
// 10, in the same run, over a backlog of queued no-op tasks (100,000 by default;
// PADDOCK_BENCH_TASKS changes it). The agents are light in-process sessions (agent/session,
// 4 slots each, an echo executor) over real TCP and gRPC to a real server on SQLite, so
// what grows with the agent count is the server's side: the registry, placement, one
// stream and one heartbeat per agent. The rate is taken between 10 % and 90 % of the
// backlog done, so that connecting the agents and the tail are not counted; so is the
// process's CPU time per task (server, agents and benchmark together: on a shared
// machine it moves less than the rate, which follows the share of CPU the run gets).
// PADDOCK_BENCH_AGENTS=10 (or 1000) runs only that side, to profile it alone.
//
//	go test -run '^$' -bench ManyAgents -benchtime 1x -timeout 60m ./sched
//	PADDOCK_BENCH_AGENTS=1000 go test -run '^$' -bench ManyAgents -benchtime 1x -cpuprofile cpu.out ./sched
func BenchmarkManyAgents(b *testing.B) {
	n := 100_000
	if v := os.Getenv("PADDOCK_BENCH_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("PADDOCK_BENCH_TASKS=%q: want a number of tasks ≥ 100", v)
		}
	}
	switch side := os.Getenv("PADDOCK_BENCH_AGENTS"); side {
	case "":
	case "10", "1000":
		agents, _ := strconv.Atoi(side)
		for i := 0; i < b.N; i++ {
			rate, cpu := dispatchRate(b, agents, n)
			b.ReportMetric(rate, "tasks/s-"+side+"-agents")
			b.ReportMetric(cpu, "cpu-µs/task-"+side+"-agents")
		}
		return
	default:
		b.Fatalf("PADDOCK_BENCH_AGENTS=%q: want 10 or 1000 (or unset for both and their ratio)", side)
	}
	for i := 0; i < b.N; i++ {
		few, fewCPU := dispatchRate(b, 10, n)
		many, manyCPU := dispatchRate(b, 1000, n)
		b.ReportMetric(few, "tasks/s-10-agents")
		b.ReportMetric(many, "tasks/s-1000-agents")
		b.ReportMetric(many/few, "ratio")
		b.ReportMetric(fewCPU, "cpu-µs/task-10-agents")
		b.ReportMetric(manyCPU, "cpu-µs/task-1000-agents")
	}
}

// dispatchRate queues n no-op tasks, connects agents in-process agents, and returns the
// tasks finished per second between 10 % and 90 % of the backlog, and the process's CPU
// time per task (µs) meanwhile.
func dispatchRate(b *testing.B, agents, n int) (rate, cpuPerTask float64) {
	b.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for lo := 0; lo < n; lo += 5000 {
		var ts []store.Task
		for i := lo; i < min(lo+5000, n); i++ {
			ts = append(ts, store.Task{ID: fmt.Sprintf("t%07d", i), Type: "test.echo", Payload: []byte("x"),
				Class: store.Batch, MaxAttempts: 3, Tenant: "default", CreatedAt: now})
		}
		if _, _, err := st.CreateBatch(ctx, ts); err != nil {
			b.Fatalf("queueing the backlog: %v", err)
		}
	}
	cfg := fastConfig()
	// A heartbeat a second per agent, so that 1,000 agents send 1,000 a second, not 10,000.
	cfg.HeartbeatInterval, cfg.LeaseTTL = time.Second, 30*time.Second
	ts := startServerOn(b, cfg, st)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ex := &fakeExec{types: []session.TaskType{{Name: "test.echo"}}, fn: echo}
	var stops []func()
	for i := 0; i < agents; i++ {
		stops = append(stops, runAgent(b, session.Config{AgentID: fmt.Sprintf("a%04d-of-%d", i, agents), Host: "test",
			Dial: session.TCPDialer(ts.agentAddr), ReconnectMin: 20 * time.Millisecond, Logger: quiet}, ex))
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	var t10, t90 time.Time
	var c10, c90 time.Duration
	deadline := time.Now().Add(30 * time.Minute)
	for t90.IsZero() {
		if time.Now().After(deadline) {
			b.Fatalf("%d agents: the backlog of %d was not 90 %% done in 30 minutes", agents, n)
		}
		time.Sleep(250 * time.Millisecond) // Counts reads the live tasks: not too often
		cs, err := st.Counts(ctx)
		if err != nil {
			b.Fatal(err)
		}
		var live int64
		for _, c := range cs {
			live += c.N
		}
		done := int64(n) - live
		if t10.IsZero() && done >= int64(n)/10 {
			t10, c10 = time.Now(), selfCPU()
		}
		if done >= int64(n)*9/10 {
			t90, c90 = time.Now(), selfCPU()
		}
	}
	done := float64(n) * 0.8
	return done / t90.Sub(t10).Seconds(), float64((c90 - c10).Microseconds()) / done
}
