package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paddockvm/paddock/internal/testutil"
)

// Superuser and Password are the credentials of the test server's superuser.
const (
	Superuser = "paddock"
	Password  = "paddock-test-password"
)

// Server is a running PostgreSQL server started by Start.
type Server struct {
	Dir  string // the server's directory: data/, the socket, server.log
	Bin  string // the directory of initdb, pg_ctl and postgres
	Port int

	runAs string // "" or the user the server runs as (root cannot run it)
	dbs   atomic.Int64
}

// FindBin returns the directory holding PostgreSQL's initdb and pg_ctl: the one on
// $PATH, else the newest /usr/lib/postgresql/*/bin. It returns "" when there is none.
func FindBin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "pg_ctl")); err == nil {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return major(dirs[i]) > major(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func major(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// Start starts a PostgreSQL server for t and stops it (and removes its files) when t
// ends. It skips t, with the fix, when PostgreSQL is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := FindBin()
	if bin == "" {
		testutil.Skip(t, "PostgreSQL server binaries (initdb, pg_ctl) not found on $PATH or under /usr/lib/postgresql/*/bin",
			"run `make setup` (installs the postgresql package)")
	}
	s := &Server{Bin: bin}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			testutil.Skip(t, "running as root and there is no postgres user to run PostgreSQL as (initdb refuses root)",
				"run `make setup` (the postgresql package creates the user) or run the tests as a non-root user")
		}
		s.runAs = "postgres"
	}
	dir, err := os.MkdirTemp("", "paddock-pgtest-")
	if err != nil {
		t.Fatalf("pgtest: making the server directory: %v", err)
	}
	s.Dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if s.runAs != "" {
		if out, err := exec.Command("chown", s.runAs, dir).CombinedOutput(); err != nil {
			t.Fatalf("pgtest: chown %s %s: %v: %s", s.runAs, dir, err, out)
		}
	}
	pw := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pw, []byte(Password+"\n"), 0o644); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if out, err := s.run("initdb", "-D", s.dataDir(), "-U", Superuser, "--pwfile="+pw, "-E", "UTF8", "--no-locale", "--no-sync",
		"--auth-local=trust", "--auth-host=scram-sha-256"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	s.Port = freePort(t)
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func (s *Server) dataDir() string { return filepath.Join(s.Dir, "data") }

// run runs one of PostgreSQL's programs (as s.runAs when set).
func (s *Server) run(prog string, args ...string) ([]byte, error) {
	path := filepath.Join(s.Bin, prog)
	var cmd *exec.Cmd
	if s.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", s.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd.CombinedOutput()
}

func (s *Server) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", s.Port, s.Dir)
	if extra := os.Getenv("PADDOCK_PGTEST_SERVER_OPTIONS"); extra != "" {
		opts += " " + extra
	}
	if out, err := s.run("pg_ctl", "start", "-w", "-t", "60", "-D", s.dataDir(), "-l", filepath.Join(s.Dir, "server.log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\nserver.log:\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server at once (pg_ctl stop -m immediate: like a crash, recovery on
// the next start). Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	if _, err := os.Stat(filepath.Join(s.dataDir(), "postmaster.pid")); err != nil {
		return nil
	}
	if out, err := s.run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", s.dataDir()); err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Restart stops the server at once and starts it again on the same port and data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// DSN returns the URL of database db as the superuser, over TCP with the password.
func (s *Server) DSN(db string) string {
	return s.DSNAs(Superuser, Password, db)
}

// DSNAs returns the URL of database db as user with password.
func (s *Server) DSNAs(user, password, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)),
		Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// NewDatabase creates a new empty database and returns its DSN. It is dropped when
// t ends.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", s.dbs.Add(1))
	s.Exec(t, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, s.DSN("postgres")); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return s.DSN(name)
}

// Exec runs SQL statements in the postgres database as the superuser.
func (s *Server) Exec(t testing.TB, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connecting: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", strings.TrimSpace(sql), err)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
