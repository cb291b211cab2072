package sched_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/plugins/runner"
	"github.com/paddockvm/paddock/sched/store"
)

// rawPluginRate is the raw plugin call rate (test.echo, 16 in flight, through the real
// handler subprocess), measured in the same run as the end-to-end figures.
func rawPluginRate(b *testing.B, calls int) float64 {
	rate, _ := rawPluginRateCPU(b, calls)
	return rate
}

// rawPluginRateCPU is rawPluginRate and the CPU time each call cost (this process and
// the handler subprocess).
func rawPluginRateCPU(b *testing.B, calls int) (float64, time.Duration) {
	sum, err := runner.SHA256File(bins.testhandler)
	if err != nil {
		b.Fatal(err)
	}
	r, err := runner.New(context.Background(), runner.Config{Handlers: []runner.HandlerSpec{{Name: "testhandler", Path: bins.testhandler, SHA256: sum}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	cpu0 := treeCPU(os.Getpid())
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < calls; i += 16 {
				if res := r.Execute(context.Background(), runner.Task{ID: fmt.Sprint(i), Type: "test.echo", Payload: []byte("x")}); !res.OK() {
					b.Error(res.Error)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	return float64(calls) / el.Seconds(), (treeCPU(os.Getpid()) - cpu0) / time.Duration(calls)
}

// BenchmarkDurableTasks: durable no-op tasks (test.echo) per second end to end — submit
// over the client API, SQLite (WAL, synchronous=FULL: the default), dispatch, two real agent
// processes with real handler subprocesses, report, archive — and submit-to-handler-start
// latency p50/p99, beside the raw plugin call rate measured in the same run.
//
//	CGO_ENABLED=0 go test -run '^$' -bench DurableTasks -benchtime 5000x ./sched
func BenchmarkDurableTasks(b *testing.B) {
	needBins(b)
	raw, rawCPU := rawPluginRateCPU(b, 5000)
	ts := startServer(b, fastConfig())
	dir := b.TempDir()
	startRealAgent(b, ts.agentAddr, "bench-1", filepath.Join(dir, "1.jsonl"))
	startRealAgent(b, ts.agentAddr, "bench-2", filepath.Join(dir, "2.jsonl"))
	b.ResetTimer()
	cpu0, self0 := treeCPU(os.Getpid()), selfCPU()
	start := time.Now()
	ids := submitMany(b, ts.tasks, b.N, func(i int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("x")}
	})
	waitAllTerminal(b, ts.srv.Store(), 30*time.Minute)
	el := time.Since(start)
	cpu := (treeCPU(os.Getpid()) - cpu0) / time.Duration(b.N)
	self := (selfCPU() - self0) / time.Duration(b.N)
	b.StopTimer()
	var lat []time.Duration
	for _, id := range ids {
		tk, err := ts.srv.Store().Get(context.Background(), id)
		if err != nil || tk.State != store.Succeeded {
			b.Fatalf("task %s: %v %v", id, tk.State, err)
		}
		lat = append(lat, tk.StartedAt.Sub(tk.CreatedAt))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/el.Seconds(), "tasks/s")
	b.ReportMetric(p(0.5), "start-p50-ms")
	b.ReportMetric(p(0.99), "start-p99-ms")
	b.ReportMetric(raw, "raw-plugin-calls/s")
	b.ReportMetric(float64(b.N)/el.Seconds()/raw, "x-raw")
	// CPU per task in every process (server and client here, the agents, the handlers)
	// against a raw call's: on busy cores the rates follow these, while x-raw also moves
	// with the load of the moment.
	b.ReportMetric(float64(cpu.Nanoseconds())/1000, "cpu-us/task")
	b.ReportMetric(float64(rawCPU.Nanoseconds())/1000, "raw-cpu-us/call")
	b.ReportMetric(float64(rawCPU)/float64(cpu), "x-raw-cpu")
	b.ReportMetric(float64(self.Nanoseconds())/1000, "server-cpu-us/task") // this process: server and client

	// Unloaded latency: one task at a time.
	var idle []time.Duration
	for i := 0; i < 200; i++ {
		id := submit(b, ts, &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("x")}).GetId()
		wait(b, ts, id, time.Minute)
		tk, _ := ts.srv.Store().Get(context.Background(), id)
		idle = append(idle, tk.StartedAt.Sub(tk.CreatedAt))
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i] < idle[j] })
	b.ReportMetric(float64(idle[100].Microseconds())/1000, "idle-start-p50-ms")
	b.ReportMetric(float64(idle[197].Microseconds())/1000, "idle-start-p99-ms")
}
