package sched_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// h2cClient speaks HTTP/2 without TLS (gRPC's own protocol; the client port serves h2c).
func h2cClient() *http.Client {
	return &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// TestGRPCHealthFollowsStore checks grpc.health.v1 over real gRPC: SERVING while the
// SQLite store answers (without a token, as a probe calls it), NOT_SERVING once the
// store is closed, NotFound for a service the port does not serve.
func TestGRPCHealthFollowsStore(t *testing.T) {
	cfg := fastConfig()
	cfg.Dev = false
	cfg.Token, cfg.AgentToken = "client-secret", "agent-secret"
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerOn(t, cfg, st)
	hc := grpchealth.NewClient(h2cClient(), ts.url, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, svc := range []string{"", paddockv1connect.TaskServiceName, paddockv1connect.ClusterServiceName} {
		res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q) with the store up: %v", svc, err)
		}
		if res.Status != grpchealth.StatusServing {
			t.Fatalf("Check(%q) with the store up = %v, want SERVING", svc, res.Status)
		}
	}
	if _, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: "no.such.Service"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("Check(no.such.Service): err = %v, want NotFound", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	res, err := hc.Check(ctx, &grpchealth.CheckRequest{})
	if err != nil {
		t.Fatalf("Check with the store closed: %v", err)
	}
	if res.Status != grpchealth.StatusNotServing {
		t.Fatalf("Check with the store closed = %v, want NOT_SERVING", res.Status)
	}
}

// TestGRPCReflection lists the client port's services through gRPC reflection (as
// grpcurl does), and checks that reflection needs the client token.
func TestGRPCReflection(t *testing.T) {
	cfg := fastConfig()
	cfg.Dev = false
	cfg.Token, cfg.AgentToken = "client-secret", "agent-secret"
	ts := startServer(t, cfg)
	rc := grpcreflect.NewClient(h2cClient(), ts.url, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	anon := rc.NewStream(ctx)
	_, err := anon.ListServices()
	anon.Close()
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("ListServices without a token: err = %v, want Unauthenticated", err)
	}

	stream := rc.NewStream(ctx, grpcreflect.WithRequestHeaders(http.Header{"Authorization": {"Bearer client-secret"}}))
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("ListServices: %v", err)
	}
	for _, want := range []string{paddockv1connect.TaskServiceName, paddockv1connect.ClusterServiceName} {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Errorf("ListServices = %v, missing %s", names, want)
		}
	}
	files, err := stream.FileContainingSymbol(paddockv1connect.TaskServiceName + ".Submit")
	if err != nil {
		t.Fatalf("FileContainingSymbol(Submit): %v", err)
	}
	if len(files) == 0 || files[0].GetName() != "api/paddock/v1/paddock.proto" {
		t.Fatalf("FileContainingSymbol(Submit) = %d files, first %q; want api/paddock/v1/paddock.proto", len(files), firstName(files))
	}
}

func firstName(files []*descriptorpb.FileDescriptorProto) string {
	if len(files) == 0 {
		return ""
	}
	return files[0].GetName()
}
