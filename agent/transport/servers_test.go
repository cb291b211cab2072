package transport_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/transport"
)

func TestParseServers(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int
		wantErr string
	}{
		{"one", "127.0.0.1:7071", 1, ""},
		{"three", "a:1, b:2,c:3", 3, ""},
		{"no port", "a:1,b", 0, `"b" is not host:port`},
		{"empty", " , ", 0, "no server given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := transport.ParseServers("agent.server", tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "agent.server") {
					t.Fatalf("ParseServers(%q) = %v, %v; want an error naming agent.server and %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Fatalf("ParseServers(%q) = %q, %v; want %d servers", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestServerListFailsOver dials three real TCP servers in turn, then stops two of
// them: every later dial reaches the one left, at once (no wait for the dead ones
// beyond their refused connections).
func TestServerListFailsOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var addrs []string
	var inners []net.Listener
	for range 3 {
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := transport.Listen(inner, opts("server"))
		go func() { // accept and hold sessions
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		defer l.Close()
		inners = append(inners, inner)
		addrs = append(addrs, inner.Addr().String())
	}
	sl, err := transport.NewServerList(addrs, transport.Options{Name: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 3 {
		c, err := sl.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[sl.Last()] = true
		c.Close()
	}
	if len(seen) != 3 {
		t.Fatalf("three dials reached %v; want each of the three servers once (round robin)", seen)
	}
	inners[0].Close()
	inners[1].Close()
	for range 4 {
		c, err := sl.Dial(ctx)
		if err != nil {
			t.Fatalf("dial with one server of three left: %v", err)
		}
		if sl.Last() != addrs[2] {
			t.Fatalf("dialled %s, which is closed; want %s", sl.Last(), addrs[2])
		}
		c.Close()
	}
	inners[2].Close()
	if _, err := sl.Dial(ctx); err == nil || !strings.Contains(err.Error(), "no server of 3 answered") {
		t.Fatalf("dial with every server closed = %v; want 'no server of 3 answered'", err)
	}
}
