package transport_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/paddockvm/paddock/agent/transport"
)

func opts(name string) transport.Options {
	return transport.Options{Name: name, HelloInterval: 50 * time.Millisecond, EOFIsTransient: true, Logger: testLog}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// exchange sends data both ways at once and checks it arrives intact.
func exchange(t *testing.T, g, h net.Conn, n int) {
	t.Helper()
	up, down := randBytes(t, n), randBytes(t, n)
	g.SetReadDeadline(time.Now().Add(20 * time.Second))
	h.SetReadDeadline(time.Now().Add(20 * time.Second))
	defer g.SetReadDeadline(time.Time{})
	defer h.SetReadDeadline(time.Time{})
	var wg sync.WaitGroup
	var gotUp, gotDown []byte
	var errUp, errDown error
	wg.Add(4)
	go func() { defer wg.Done(); _, errUp = g.Write(up) }()
	go func() { defer wg.Done(); _, errDown = h.Write(down) }()
	go func() { defer wg.Done(); gotUp = make([]byte, n); _, _ = io.ReadFull(h, gotUp) }()
	go func() { defer wg.Done(); gotDown = make([]byte, n); _, _ = io.ReadFull(g, gotDown) }()
	wg.Wait()
	if errUp != nil || errDown != nil {
		t.Fatalf("writes: %v, %v", errUp, errDown)
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("%d bytes each way: data corrupted", n)
	}
}

func TestSessionSkipsReadyLineAndStaleBytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := newFakePort()
	// Before any host: the agent's ready line and junk from a previous boot.
	port.injectToHost([]byte("PADDOCK-AGENT READY version=dev boot=1\n"))
	port.injectToHost(randBytes(t, 3000))
	g := transport.NewGuest(port.guest(), opts("guest"))
	defer g.Close()

	// First host connection and session.
	h1 := transport.NewHost(port.connect(), opts("host1"))
	gc1, err := g.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hc1, err := h1.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, gc1, hc1, 200_000)

	// The host goes away; the guest keeps writing into the port (stale bytes
	// for the next host), and half a frame the old host wrote sits unread.
	h1.Close()
	go gc1.Write(bytes.Repeat([]byte("stale session-1 bytes "), 5000))
	port.injectToGuest([]byte{'P', 'D', 'K', 0xf1, 3, 0, 0, 0, 1, 2, 3})

	// Second host connection: a new session, clean.
	h2 := transport.NewHost(port.connect(), opts("host2"))
	defer h2.Close()
	gc2, err := g.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hc2, err := h2.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gc2.(*transport.Conn).Session() == gc1.(*transport.Conn).Session() || hc2.(*transport.Conn).Session() != gc2.(*transport.Conn).Session() {
		t.Fatalf("sessions: guest %v host %v, old %v", gc2.LocalAddr(), hc2.LocalAddr(), gc1.LocalAddr())
	}
	exchange(t, gc2, hc2, 200_000)
	// The old session is dead at the guest.
	if _, err := gc1.Read(make([]byte, 1)); err == nil {
		t.Fatal("old session still readable after the host reconnected")
	}
	// A clean close reaches the peer as EOF.
	gc2.Close()
	if _, err := hc2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("host read after guest close: %v, want EOF", err)
	}
}

func TestNewHelloReplacesSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	port := newFakePort()
	g := transport.NewGuest(port.guest(), opts("guest"))
	defer g.Close()
	h := transport.NewHost(port.connect(), opts("host"))
	defer h.Close()
	gc1, err := g.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hc1, _ := h.Accept(ctx)
	gc2, err := g.Dial(ctx) // e.g. gRPC redialling after a keepalive timeout
	if err != nil {
		t.Fatal(err)
	}
	hc2, err := h.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hc1.Read(make([]byte, 1)); err == nil {
		t.Fatal("host's old session survived a new HELLO")
	}
	if _, err := gc1.Write([]byte("x")); err == nil {
		t.Fatal("guest's old session still writable")
	}
	exchange(t, gc2, hc2, 50_000)
}

func TestDialHonoursContextWithoutHost(t *testing.T) {
	port := newFakePort()
	g := transport.NewGuest(port.guest(), opts("guest"))
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := g.Dial(ctx); err == nil {
		t.Fatal("Dial succeeded with no host attached")
	}
}

func TestTCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := transport.Listen(inner, opts("server"))
	defer l.Close()
	gc, err := transport.DialTCP(ctx, inner.Addr().String(), transport.Options{Name: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	hc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, gc, hc, 300_000)
}

// TestGRPCSurvivesHostReconnects runs a real gRPC service over a session, and
// has the host disconnect and reconnect several times with stale bytes in the
// port. Calls fail only as Unavailable while the host is away, and succeed again
// once it is back: no session is ever corrupted.
func TestGRPCSurvivesHostReconnects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := newFakePort()
	port.injectToHost([]byte("PADDOCK-AGENT READY version=dev\n"))

	l := transport.NewListener(transport.Addr{Name: "host"}, opts("host"))
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	defer srv.Stop()

	g := transport.NewGuest(port.guest(), opts("guest"))
	defer g.Close()
	cc, err := grpc.NewClient("passthrough:///paddock-agent",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.Dial(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)

	waitOK := func(round int) {
		t.Helper()
		for {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			ccancel()
			if err == nil {
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Fatalf("round %d: status %v", round, resp.GetStatus())
				}
				return
			}
			if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
				t.Fatalf("round %d: call failed with %v (a corrupted session?)", round, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("round %d: no successful call before the test deadline: %v", round, err)
			}
		}
	}

	for round := range 4 {
		hostConn := port.connect()
		sctx, scancel := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() { l.ServeConn(sctx, hostConn); close(served) }()
		t0 := time.Now()
		waitOK(round)
		t.Logf("round %d: first call OK after %v", round, time.Since(t0))
		for i := range 20 { // a burst of calls on the established session
			if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("round %d call %d: %v", round, i, err)
			}
		}
		// Host side goes away mid-stream; stale bytes pile up in the port.
		scancel()
		<-served
		port.injectToHost(randBytes(t, 500))
		port.injectToGuest([]byte{'P', 'D', 'K', 0xf1, 3})
	}
}

// testLog shows the transport's logs with -v.
var testLog = func() *slog.Logger {
	for _, a := range os.Args {
		if a == "-test.v=true" || a == "-test.v" {
			return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	return slog.New(slog.DiscardHandler)
}()
