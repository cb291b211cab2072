package pgtest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

func TestStartNewDatabaseRestart(t *testing.T) {
	s := pgtest.Start(t)
	ctx := context.Background()
	dsn := s.NewDatabase(t)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	s.Restart(t)
	c, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, "SELECT v FROM x").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after restart: %d, %v; want 42 (committed before the immediate stop)", v, err)
	}
	_, err = pgx.Connect(ctx, s.DSNAs(pgtest.Superuser, "wrong", "postgres"))
	if err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("wrong password: %v, want password authentication failed", err)
	}
}
