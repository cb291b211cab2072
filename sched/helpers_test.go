package sched_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// testServer is an in-process server on a real SQLite file and real TCP ports.
type testServer struct {
	srv       *sched.Server
	agentAddr string
	url       string
	tasks     paddockv1connect.TaskServiceClient
	cluster   paddockv1connect.ClusterServiceClient
	dbPath    string
	stop      func() // stops the server and closes its store (also at cleanup)
}

func fastConfig() sched.Config {
	return sched.Config{Dev: true, HeartbeatInterval: 100 * time.Millisecond, LeaseTTL: time.Second,
		RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, TimeoutGrace: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
}

// rawAgentConfig is fastConfig for tests whose hand-written agents send no
// heartbeats and do not test expiry: a lease lasts 30 s, so a loaded machine does
// not expire it between two steps of the test (a 1 s lease did, under CI load).
func rawAgentConfig() sched.Config {
	c := fastConfig()
	c.LeaseTTL = 30 * time.Second
	return c
}

func startServer(t testing.TB, cfg sched.Config) *testServer {
	t.Helper()
	return startServerAt(t, cfg, filepath.Join(t.TempDir(), "paddock.db"))
}

// startServerAt is startServer on the database at dbPath.
func startServerAt(t testing.TB, cfg sched.Config, dbPath string) *testServer {
	t.Helper()
	st, err := sqlite.Open(context.Background(), dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerOn(t, cfg, st)
	ts.dbPath = dbPath
	return ts
}

// startServerOn is startServer on st, which it closes when the test ends.
func startServerOn(t testing.TB, cfg sched.Config, st store.Store) *testServer {
	t.Helper()
	srv, err := sched.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx, al, cl); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			st.Close()
		})
	}
	t.Cleanup(stop)
	url := "http://" + cl.Addr().String()
	var opts []connect.ClientOption
	if cfg.Token != "" {
		opts = append(opts, connect.WithInterceptors(bearer(cfg.Token)))
	}
	return &testServer{srv: srv, agentAddr: al.Addr().String(), url: url, stop: stop,
		tasks:   paddockv1connect.NewTaskServiceClient(http.DefaultClient, url, opts...),
		cluster: paddockv1connect.NewClusterServiceClient(http.DefaultClient, url, opts...)}
}

func bearer(tok string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
}

// fakeExec is an in-process Executor for logic tests.
type fakeExec struct {
	types []session.TaskType
	fn    func(ctx context.Context, t session.Task) session.Result
	mu    sync.Mutex
	runs  map[string]int
}

func (f *fakeExec) Types() []session.TaskType { return f.types }

func (f *fakeExec) Execute(ctx context.Context, t session.Task) session.Result {
	f.mu.Lock()
	if f.runs == nil {
		f.runs = map[string]int{}
	}
	f.runs[t.ID]++
	f.mu.Unlock()
	return f.fn(ctx, t)
}

func echo(_ context.Context, t session.Task) session.Result { return session.Result{Output: t.Payload} }

// startAgent runs an in-process agent session until the test ends (or stop is called).
func startAgent(t testing.TB, ts *testServer, id string, ex session.Executor) (stop func()) {
	t.Helper()
	return runAgent(t, session.Config{AgentID: id, Host: "test", Dial: session.TCPDialer(ts.agentAddr), ReconnectMin: 20 * time.Millisecond}, ex)
}

// runAgent runs an in-process agent session with cfg until the test ends (or stop is called).
func runAgent(t testing.TB, cfg session.Config, ex session.Executor) (stop func()) {
	t.Helper()
	s, err := session.New(cfg, ex)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func submit(t testing.TB, ts *testServer, spec *paddockv1.TaskSpec) *paddockv1.Task {
	t.Helper()
	r, err := ts.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r.Msg.GetTask()
}

func wait(t testing.TB, ts *testServer, id string, d time.Duration) *paddockv1.Task {
	t.Helper()
	r, err := ts.tasks.Wait(context.Background(), connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: d.Milliseconds()}))
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	if !r.Msg.GetTerminal() {
		t.Fatalf("task %s not terminal after %v: %v", id, d, r.Msg.GetTask())
	}
	return r.Msg.GetTask()
}

var httpClient = http.Client{Timeout: time.Minute}

// openStoreRO opens the SQLite file a subprocess server uses (for reading; WAL allows it).
func openStoreRO(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
