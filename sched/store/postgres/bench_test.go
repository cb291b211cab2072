package postgres_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// BenchmarkDurable measures a task's durable path (pgtest.DurablePath: create, lease,
// start, succeed, each committed) through each store in the same run. The sqlite
// sub-benchmark is the baseline: compare tasks/s.
//
//	go test -run '^$' -bench Durable -benchtime 5000x ./sched/store/postgres
func BenchmarkDurable(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "paddock.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		pgtest.DurablePath(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		srv := pgtest.Start(b)
		s, err := postgres.Open(context.Background(), srv.NewDatabase(b), postgres.Options{MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		pgtest.DurablePath(b, s)
	})
}
