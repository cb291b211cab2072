package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
	"github.com/paddockvm/paddock/sched/store/storetest"
)

// TestOpenErrors: bad input at Open gets an error that says what to fix.
func TestOpenErrors(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, dsn, want string
	}{
		{"bad DSN", "postgres://x:%zz@host/db", "parsing the DSN (server.postgres_dsn)"},
		{"wrong password", srv.DSNAs(pgtest.Superuser, "wrong", "postgres"), "check the user and password"},
		{"unknown database", srv.DSN("nosuchdb"), "create the database"},
		{"nobody listening", "postgres://u:p@127.0.0.1:1/db?sslmode=disable", "is PostgreSQL running and reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := postgres.Open(ctx, tc.dsn, postgres.Options{ConnectRetry: 300 * time.Millisecond})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v; want an error saying %q", err, tc.want)
			}
			if strings.Contains(err.Error(), pgtest.Password) || strings.Contains(err.Error(), "wrong") && tc.name == "wrong password" && strings.Contains(err.Error(), ":wrong@") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// TestOpenWaitsForServer: Open keeps retrying while PostgreSQL is down, and succeeds
// once it is up.
func TestOpenWaitsForServer(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		defer close(started)
		time.Sleep(time.Second)
		srv.Restart(t)
	}()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{ConnectRetry: time.Minute})
	<-started
	if err != nil {
		t.Fatalf("Open while the server was starting: %v", err)
	}
	s.Close()
}

// TestNewerSchemaRefused: a database migrated by a newer paddock is not touched.
func TestNewerSchemaRefused(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	dsn := srv.NewDatabase(t)
	s, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (999, true)`); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	_, err = postgres.Open(ctx, dsn, postgres.Options{})
	if err == nil || !strings.Contains(err.Error(), "newer than this paddock's") {
		t.Fatalf("Open of a newer schema = %v; want it refused", err)
	}
}

// TestRestartMidRun: a server restart (immediate stop: like a crash) loses nothing
// committed, and the store works again once the server is back.
func TestRestartMidRun(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	s, err := postgres.Open(ctx, srv.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Create(ctx, storetest.NewTask("a", "echo")); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	var got error
	for i := 0; i < 50; i++ { // the pool drops its dead connections as they fail
		if _, got = s.Get(ctx, "a"); got == nil {
			break
		}
	}
	if got != nil {
		t.Fatalf("Get after the server restarted: %v", got)
	}
	if _, _, err := s.Create(ctx, storetest.NewTask("b", "echo")); err != nil {
		t.Fatalf("Create after the server restarted: %v", err)
	}
	if d := s.Describe(); strings.Contains(d, pgtest.Password) || !strings.HasPrefix(d, "postgres://paddock@127.0.0.1:") {
		t.Fatalf("Describe = %q; want the user, host and database, no password", d)
	}
}
