package cli

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

// TestFailoverHTTP: with client.server listing a dead replica and a live one, every
// request reaches the live one, whichever the client starts at.
func TestFailoverHTTP(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "live") }))
	defer live.Close()
	deadL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + deadL.Addr().String()
	deadL.Close()
	for range 8 { // random start: both orders get tried
		f, err := newFailover([]string{dead, live.URL})
		if err != nil {
			t.Fatal(err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = f.dial
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		resp, err := hc.Get(dead + "/x")
		if err != nil {
			t.Fatalf("GET with one replica dead: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "live" {
			t.Fatalf("GET = %q, want the live replica's answer", b)
		}
	}
	if _, err := newFailover([]string{"http://a:1", "not a url"}); err == nil || !strings.Contains(err.Error(), "client.server") {
		t.Fatalf("newFailover with a malformed URL = %v; want an error naming client.server", err)
	}
}

func TestConnectedFirst(t *testing.T) {
	a := func(id, replica, state string) *paddockv1.Agent {
		return &paddockv1.Agent{Id: id, Replica: replica, State: state}
	}
	tests := []struct {
		name string
		in   []*paddockv1.Agent
		want []string // id@replica
	}{
		{"moved agent listed once, where it is connected",
			[]*paddockv1.Agent{a("b", "r1", "lost"), a("a", "r2", "connected"), a("b", "r2", "connected")}, []string{"a@r2", "b@r2"}},
		{"lost everywhere stays listed", []*paddockv1.Agent{a("c", "r1", "lost"), a("c", "r3", "lost")}, []string{"c@r1", "c@r3"}},
		{"one replica", []*paddockv1.Agent{a("b", "r1", "connected"), a("a", "r1", "lost")}, []string{"a@r1", "b@r1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := connectedFirst(tt.in, (*paddockv1.Agent).GetId, func(x *paddockv1.Agent) bool { return x.GetState() == "connected" })
			var ids []string
			for _, x := range got {
				ids = append(ids, x.GetId()+"@"+x.GetReplica())
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("connectedFirst = %v, want %v", ids, tt.want)
			}
		})
	}
}

// TestNoServerAnswers: every client command against an address where nothing listens
// exits 1 with the dial error and a hint naming --server, without a panic (host ls and
// agent ls dereferenced the missing response).
func TestNoServerAnswers(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	for _, args := range [][]string{
		{"host", "ls"}, {"agent", "ls"}, {"task", "ls"}, {"task", "get", "some-id"},
		{"host", "ls", "--server", dead + "," + dead},
	} {
		if !slices.Contains(args, "--server") {
			args = append(args, "--server", dead)
		}
		_, errOut, code := run(t, args...)
		if code != 1 || !strings.Contains(errOut, "connection refused") || !strings.Contains(errOut, "no Paddock server answered at --server") {
			t.Errorf("paddock %s: exit %d, stderr %q; want 1, the dial error and the --server hint", strings.Join(args, " "), code, errOut)
		}
	}
}
