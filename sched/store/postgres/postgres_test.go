package postgres_test

import (
	"context"
	"testing"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// openN returns an opener of n stores on one new database of srv.
func openN(srv *pgtest.Server, o postgres.Options) func(t *testing.T, n int) []store.Store {
	return func(t *testing.T, n int) []store.Store {
		dsn := srv.NewDatabase(t)
		var out []store.Store
		for i := 0; i < n; i++ {
			s, err := postgres.Open(context.Background(), dsn, o)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
}

func TestContract(t *testing.T) {
	srv := pgtest.Start(t)
	open := openN(srv, postgres.Options{})
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, 1)[0] })
}

func TestConcurrency(t *testing.T) {
	srv := pgtest.Start(t)
	Concurrency(t, openN(srv, postgres.Options{}))
}
