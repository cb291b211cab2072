package link_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/paddockvm/paddock/hostd/link"
	"github.com/paddockvm/paddock/internal/pki"
)

// TestDialServerListFailsOver serves gRPC over mutual TLS (the dev PKI) on two ports,
// dials both as a list, and stops the one in use: the next calls reach the other,
// without a new Dial.
func TestDialServerListFailsOver(t *testing.T) {
	dir := t.TempDir()
	srvTLS, err := pki.DevServerTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	hostTLS, err := pki.DevHostTLS(dir, "h1")
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]*grpc.Server{}
	var addrs []string
	for range 2 {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvTLS)))
		healthpb.RegisterHealthServer(gs, health.NewServer())
		go gs.Serve(lis)
		defer gs.Stop()
		servers[lis.Addr().String()] = gs
		addrs = append(addrs, lis.Addr().String())
	}
	cc, err := link.Dial(strings.Join(addrs, ","), hostTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	check := func() string {
		t.Helper()
		for {
			var p peer.Peer
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
			if err == nil {
				return p.Addr.String()
			}
			if ctx.Err() != nil {
				t.Fatalf("no server answered: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := check()
	servers[first].Stop()
	if second := check(); second == first {
		t.Fatalf("a call after %s stopped still reached it", first)
	}
	if _, err := link.Dial("127.0.0.1:1,nohostport", hostTLS); err == nil || !strings.Contains(err.Error(), "host.server") {
		t.Fatalf("Dial with a malformed element = %v; want an error naming host.server", err)
	}
}
