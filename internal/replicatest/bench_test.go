package replicatest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

// BenchmarkReplicas measures no-op tasks/s end to end (submitted over the client API,
// spread over the replicas, each stored, dispatched, run by an in-process agent,
// reported and stored as succeeded) with one `paddock server` and with three, on the
// same PostgreSQL server in the same run, each on a fresh database with six agents of
// 16 slots spread over the replicas. It logs the ratio of the two rates.
//
//	go test -run '^$' -bench Replicas -benchtime 3000x ./internal/replicatest
func BenchmarkReplicas(b *testing.B) {
	pg := pgtest.Start(b)
	bin := paddockBin(b)
	rates := map[int]float64{}
	var benchEnv []string // e.g. PADDOCK_REPLICA_BENCH_ENV=PADDOCK_SERVER_POSTGRES_NOTIFY=false
	if e := os.Getenv("PADDOCK_REPLICA_BENCH_ENV"); e != "" {
		benchEnv = strings.Split(e, " ")
	}
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			dsn := pg.NewDatabase(b)
			st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var rs []*replica
			for i := range n {
				rs = append(rs, startReplica(b, bin, dsn, fmt.Sprintf("b%d-%d", n, i+1), benchEnv...))
			}
			const agents = 6
			startAgents(b, rs, agents, 16, &noop{nosleep: true, runs: map[string]int{}})
			waitAgents(b, rs, agents)
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			if _, err := submitAll(ctx, rs, fmt.Sprintf("bench%d-%d", n, b.N), b.N, 16); err != nil {
				b.Fatal(err)
			}
			waitTerminal(b, st, int64(b.N), 10*time.Minute)
			rate := float64(b.N) / time.Since(start).Seconds()
			b.StopTimer()
			b.ReportMetric(rate, "tasks/s")
			rates[n] = rate
		})
	}
	if rates[1] > 0 && rates[3] > 0 {
		b.Logf("3 replicas vs 1 on one PostgreSQL, GOMAXPROCS %d: %.0f vs %.0f tasks/s, ratio %.2f", runtime.GOMAXPROCS(0), rates[3], rates[1], rates[3]/rates[1])
	}
}
