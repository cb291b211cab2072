package postgres_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// BenchmarkDurable measures the durable path through each store in the same run:
// path is pgtest.DurablePath (each caller creates, leases, starts and succeeds one task
// after another), pipeline is pgtest.Pipeline (submitters, one batching dispatcher,
// 100 workers). The sqlite sub-benchmarks are the baseline: compare tasks/s. The
// postgres ones also report the server's and the benchmark's CPU time per task
// (pgtest.Server.MeasureCPU).
//
//	go test -run '^$' -bench Durable -benchtime 5000x ./sched/store/postgres
func BenchmarkDurable(b *testing.B) {
	srv := pgtest.Start(b)
	for _, mode := range []struct {
		name string
		run  func(*testing.B, store.Store)
	}{{"path", pgtest.DurablePath}, {"pipeline", pgtest.Pipeline}} {
		b.Run(mode.name+"/sqlite", func(b *testing.B) {
			s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			mode.run(b, s)
		})
		b.Run(mode.name+"/postgres", func(b *testing.B) {
			s, err := postgres.Open(context.Background(), srv.NewDatabase(b), postgres.Options{MaxConns: 32})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			srv.MeasureCPU(b, func() { mode.run(b, s) })
		})
	}
}
