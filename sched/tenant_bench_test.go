package sched_test

import (
	"connectrpc.com/connect"

	"path/filepath"
	"sync"
	"testing"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/tenant"
)

// BenchmarkDurableTasksTenants is BenchmarkDurableTasks (same agents, same no-op
// tasks) with authentication by stored tokens and three configured tenants sharing
// the slots by weight (1, 3, 1): the cost of tenants in the dispatcher and on every
// call. Run both in one go to compare:
//
//	go test -run '^$' -bench 'DurableTasks' -benchtime 20000x ./sched/
func BenchmarkDurableTasksTenants(b *testing.B) {
	needBins(b)
	cfg := tenantConfig()
	cfg.Tenants = tenant.Config{"t1": {Weight: 1}, "t2": {Weight: 3}, "t3": {Weight: 1}}
	ts := startServer(b, cfg)
	admin := clientsFor(ts, adminToken)
	var cs []clients
	for _, tn := range []string{"t1", "t2", "t3"} {
		r, err := admin.tenants.CreateToken(b.Context(), connect.NewRequest(&paddockv1.CreateTokenRequest{Tenant: tn}))
		if err != nil {
			b.Fatal(err)
		}
		cs = append(cs, clientsFor(ts, r.Msg.GetToken()))
	}
	dir := b.TempDir()
	for _, id := range []string{"bench-1", "bench-2"} {
		startProc(b, "agent-"+id, "TESTAGENT READY", bins.agent, "-server", ts.agentAddr, "-id", id, "-token", agentToken, "-total", "24",
			"-handler", "testhandler="+bins.testhandler, "-handler", "checksum="+bins.checksum, "-record", filepath.Join(dir, id+".jsonl"))
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < b.N; i += 8 {
				spec := &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("x")}
				if _, err := cs[i%len(cs)].tasks.Submit(b.Context(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec})); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("submit: %v", err)
	}
	waitAllTerminal(b, ts.srv.Store(), 30*time.Minute)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "tasks/s")
}
