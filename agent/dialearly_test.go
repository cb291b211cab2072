package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/agent/transport"
)

// dialEarly sends its HELLO before anyone dials: the host accepts a session while the
// agent has not asked for one yet; the first dial takes exactly that session, and a
// later dial starts a new one (the first then ends). Over a real socket pair, the host
// half being agent/transport's own Host.
func TestDialEarlyTakesTheEarlySessionFirst(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guestEnd, hostEnd := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "host")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	h := transport.NewHost(hostEnd, transport.Options{Name: "host", Logger: log})
	defer h.Close()

	g, dial := dialEarly(ctx, guestEnd, "guest-1", log)
	defer g.Close()
	early, err := h.Accept(ctx) // nobody has dialled yet
	if err != nil {
		t.Fatalf("no early session: %v", err)
	}
	c1, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c1.(*transport.Conn).Session(), early.(*transport.Conn).Session(); got != want {
		t.Fatalf("first dial: session %016x, want the early one %016x", got, want)
	}
	if _, err := c1.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(early, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("host read %q, %v through the early session", buf, err)
	}

	c2, err := dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := h.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s := c2.(*transport.Conn).Session(); s == c1.(*transport.Conn).Session() || s != second.(*transport.Conn).Session() {
		t.Fatalf("second dial: session %016x, want a new one (the host accepted %016x)", s, second.(*transport.Conn).Session())
	}
	if _, err := c1.Read(buf); err == nil {
		t.Fatal("the first session still reads after the second dial replaced it")
	}
}
