package runner_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
	"github.com/paddockvm/paddock/plugins/runner"
)

// fakeHandlerEnv makes the test binary a handler that misbehaves in go-plugin's
// handshake (or, "plain", a handler built with go-plugin alone, without
// plugins/sdk).
const fakeHandlerEnv = "PADDOCK_RUNNER_TEST_FAKE_HANDLER"

func fakeHandler(mode string) int {
	if os.Getenv("PADDOCK_HANDLER_PLUGIN") == "" {
		fmt.Fprintln(os.Stderr, "no magic cookie")
		return 1
	}
	switch mode {
	case "garbage":
		fmt.Println("Hello! Starting up, please wait")
		time.Sleep(time.Minute)
	case "version":
		fmt.Println("1|7|unix|/nonexistent|grpc|")
		time.Sleep(time.Minute)
	case "nocert":
		fmt.Println("1|1|unix|/nonexistent|grpc|")
		time.Sleep(time.Minute)
	case "netrpc":
		fmt.Println("1|1|unix|/nonexistent|netrpc")
		time.Sleep(time.Minute)
	case "exit":
		fmt.Fprintln(os.Stderr, "cannot open /etc/handler.conf: no such file")
		return 3
	case "hang":
		time.Sleep(time.Minute)
	case "slow": // busy for 3 s (a start in a guest starved of CPU), then a handler
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		}
		servePlain()
	case "plain":
		servePlain()
	}
	return 0
}

// servePlain serves the handler protocol with go-plugin's own Serve, as a
// third-party handler that does not use plugins/sdk would.
func servePlain() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "PADDOCK_HANDLER_PLUGIN",
			MagicCookieValue: "2f1c6a0e-paddock-task-handler",
		},
		Plugins:    plugin.PluginSet{"handler": &plainPlugin{}},
		GRPCServer: plugin.DefaultGRPCServer,
	})
}

type plainPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (plainPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	handlerpb.RegisterHandlerServer(s, plainServer{})
	return nil
}

func (plainPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("server side only")
}

type plainServer struct {
	handlerpb.UnimplementedHandlerServer
}

func (plainServer) Describe(context.Context, *handlerpb.DescribeRequest) (*handlerpb.DescribeResponse, error) {
	return &handlerpb.DescribeResponse{ProtocolVersion: 1, Types: []*handlerpb.TaskType{{Name: "plain.upper", Version: "1.0.0"}}}, nil
}

func (plainServer) Handle(_ context.Context, r *handlerpb.HandleRequest) (*handlerpb.HandleResponse, error) {
	fmt.Println("plain handler says hello on stdout")
	return &handlerpb.HandleResponse{Output: []byte(strings.ToUpper(string(r.GetPayload())))}, nil
}

// HandleBatch answers Unimplemented, as a handler built before HandleBatch does, and
// says on its stdout that it was asked (TestExecuteBatchFallback counts the asks).
func (plainServer) HandleBatch(*handlerpb.HandleBatchRequest, handlerpb.Handler_HandleBatchServer) error {
	fmt.Println(plainBatchAsked)
	return status.Error(codes.Unimplemented, "method HandleBatch not implemented")
}

const plainBatchAsked = "plain handler: asked for HandleBatch"

// syncBuffer is a bytes.Buffer safe for the runner's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fakeSpec is the test binary run as a fake handler in mode.
func fakeSpec(t *testing.T, mode string) runner.HandlerSpec {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		t.Fatal(err)
	}
	return runner.HandlerSpec{Name: "fake-" + mode, Path: exe, SHA256: hex.EncodeToString(hs.Sum(nil)), Env: []string{fakeHandlerEnv + "=" + mode}}
}

// TestHandshakeErrors starts handlers that fail go-plugin's handshake in each way
// and checks the runner refuses each with an error that says what went wrong.
func TestHandshakeErrors(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{"garbage", []string{`fake-garbage`, `first stdout line "Hello! Starting up, please wait" is not a go-plugin handshake line`}},
		{"version", []string{`handler protocol version "7", this agent 1`}},
		{"nocert", []string{"no TLS certificate in its handshake", "AutoMTLS"}},
		{"netrpc", []string{`go-plugin protocol "netrpc"`, "only grpc"}},
		{"exit", []string{"exited (exit status 3) before its go-plugin handshake", "cannot open /etc/handler.conf"}},
		{"hang", []string{"no go-plugin handshake line on its stdout", "used no CPU for 3s (StartTimeout)", "stuck before sdk.Serve"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r, err := runner.New(ctx, runner.Config{Handlers: []runner.HandlerSpec{fakeSpec(t, tc.mode)}, StartTimeout: 3 * time.Second, Logger: testLogger(t)})
			if err == nil {
				r.Close()
				t.Fatal("New accepted a handler that fails its handshake")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestSlowStartIsWaitedFor: a handler that keeps using CPU for three StartTimeouts
// before its handshake (as one does in a guest starved of CPU) is started, not refused.
func TestSlowStartIsWaitedFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := runner.New(ctx, runner.Config{Handlers: []runner.HandlerSpec{fakeSpec(t, "slow")}, StartTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("a handler busy starting for 3s with a StartTimeout of 1s was refused: %v", err)
	}
	r.Close()
}

// TestChecksumBeforeExec: a handler whose binary does not match its sha256 is
// refused before it runs.
func TestChecksumBeforeExec(t *testing.T) {
	s := fakeSpec(t, "plain")
	s.SHA256 = strings.Repeat("00", 32)
	r, err := runner.New(context.Background(), runner.Config{Handlers: []runner.HandlerSpec{s}, Logger: testLogger(t)})
	if err == nil {
		r.Close()
		t.Fatal("New accepted a handler with the wrong sha256")
	}
	if !strings.Contains(err.Error(), "refusing handler") || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("error %q does not say the sha256 did not match", err)
	}
}

// TestPlainGoPluginHandler runs a handler built with go-plugin alone (no
// plugins/sdk): the runner's client must speak go-plugin's protocol, not only
// the SDK's.
func TestPlainGoPluginHandler(t *testing.T) {
	ctx := context.Background()
	logs := &syncBuffer{}
	r, err := runner.New(ctx, runner.Config{Handlers: []runner.HandlerSpec{fakeSpec(t, "plain")}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	res := r.Execute(ctx, runner.Task{ID: "p1", Type: "plain.upper", Payload: []byte("shout")})
	if res.Error != "" || string(res.Output) != "SHOUT" {
		t.Fatalf("Execute = %+v, want output SHOUT", res)
	}
	// Its stdout after Serve comes over go-plugin's stdio stream, on its own path:
	// it may arrive after the answer, so look for it in the agent's log.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "plain handler says hello on stdout") {
		if time.Now().After(deadline) {
			t.Fatalf("the handler's stdout line (go-plugin's stdio stream) did not reach the agent's log within a minute:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(time.Minute):
		t.Fatal("Close did not return within a minute")
	}
}
