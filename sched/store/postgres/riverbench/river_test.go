package riverbench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

// BenchmarkRiverBaseline runs, on one PostgreSQL server in one run, no-op tasks
// through Paddock's PostgreSQL store (pgtest.DurablePath: 8 × GOMAXPROCS callers,
// each task created, leased, started and succeeded, every step committed; and
// pgtest.Pipeline: submitters, a dispatcher leasing up to 100 at once, 100 workers that
// write each task's start with its result, as the server does for a batch task that ends
// within its start delay: three writes a task, as River's insert, fetch and complete) and
// no-op jobs through a River client (the same number of callers inserting one job at a time,
// 100 workers; a job counts once its completion is committed). River runs twice: with
// its defaults (fetch cooldown 100ms, poll 1s) and tuned for latency (cooldown 1ms,
// poll 10ms). Compare tasks/s with jobs/s. Each also reports the server's and the
// benchmark process's CPU time per task or job (pgtest.Server.MeasureCPU), steadier
// than the rates on a machine shared with other work.
func BenchmarkRiverBaseline(b *testing.B) {
	srv := pgtest.Start(b)
	for _, mode := range []struct {
		name string
		run  func(*testing.B, store.Store)
	}{{"path", pgtest.DurablePath}, {"pipeline", pgtest.Pipeline}} {
		b.Run("paddock-postgres-"+mode.name, func(b *testing.B) {
			s, err := postgres.Open(context.Background(), srv.NewDatabase(b), postgres.Options{MaxConns: 32})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			srv.MeasureCPU(b, func() { mode.run(b, s) })
		})
	}
	b.Run("river-defaults", func(b *testing.B) { benchRiver(b, srv, 0, 0) })
	b.Run("river-tuned", func(b *testing.B) { benchRiver(b, srv, time.Millisecond, 10*time.Millisecond) })
}

type noopArgs struct{}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

func benchRiver(b *testing.B, srv *pgtest.Server, cooldown, poll time.Duration) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(srv.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	mig, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		b.Fatalf("migrating River's schema: %v", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}},
		Workers:           workers,
		FetchCooldown:     cooldown,
		FetchPollInterval: poll,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := client.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer client.Stop(ctx)
	srv.MeasureCPU(b, func() { runRiver(b, client, pool) })
}

// runRiver inserts b.N no-op jobs with client from 8 × GOMAXPROCS callers and reports
// jobs/s once every job's completion is committed.
func runRiver(b *testing.B, client *river.Client[pgx.Tx], pool *pgxpool.Pool) {
	ctx := context.Background()
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	var inserted atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Insert(ctx, noopArgs{}, nil); err != nil {
				b.Error(err)
				return
			}
			inserted.Add(1)
		}
	})
	// Done when every job's completion is committed.
	for {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state = 'completed'`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n >= inserted.Load() {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}
