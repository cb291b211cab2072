//go:build cgo

package guesttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/transport"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

func TestGuestSessionsSurviveHostReconnects(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	bin := filepath.Join(t.TempDir(), "guestecho")
	build := exec.Command("go", "build", "-o", bin, "github.com/paddockvm/paddock/agent/transport/testdata/guestecho")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building guestecho: %v\n%s", err, out)
	}
	g := testguest.Build(t, testguest.Options{
		Files:  map[string]string{"/bin/guestecho": bin},
		Script: "/bin/guestecho 2>/dev/console",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := hypervisor.DefaultConfig()
	cfg.URI = uri
	hv, err := hypervisor.Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
	var rb [4]byte
	rand.Read(rb[:])
	name := "paddock-transport-" + hex.EncodeToString(rb[:])
	sock := filepath.Join(g.Dir, "agent.sock")
	console := filepath.Join(g.Dir, "console.log")
	if _, err := hv.Create(ctx, hypervisor.DomainSpec{
		Name: name, VCPUs: 1, MemoryMiB: 256, Kernel: g.Kernel, Initrd: g.Initrd,
		Cmdline:    "console=ttyS0 quiet panic=-1",
		Channels:   []hypervisor.Channel{{Name: transport.PortName, SocketPath: sock}},
		ConsoleLog: console,
	}); err != nil {
		t.Fatalf("creating %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := hv.Destroy(context.Background(), name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("destroying %s: %v", name, err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("console of %s:\n%s", name, b)
		}
	})
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}

	var prev uint64
	for round := range 4 {
		raw := dialSocket(t, ctx, sock)
		h := transport.NewHost(raw, transport.Options{Name: "host", Logger: log})
		actx, acancel := context.WithTimeout(ctx, 3*time.Minute)
		c, err := h.Accept(actx)
		acancel()
		if err != nil {
			h.Close()
			t.Fatalf("round %d: no session from the guest: %v", round, err)
		}
		s := c.(*transport.Conn).Session()
		if s == prev {
			t.Fatalf("round %d: session %x reused", round, s)
		}
		prev = s
		// Echo round trips: every byte back, in order.
		for i := range 3 {
			msg := make([]byte, 64<<10)
			rand.Read(msg)
			c.SetDeadline(time.Now().Add(time.Minute))
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("round %d echo %d: %v", round, i, err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("round %d echo %d: corrupted echo", round, i)
			}
		}
		t.Logf("round %d: session %016x echoed 3×64 KiB intact", round, s)
		// Leave unread echo in flight (stale bytes for the next connection) and
		// drop the connection without closing the session.
		stale := make([]byte, 100<<10)
		rand.Read(stale)
		c.Write(stale)
		h.Close()
	}
}

func dialSocket(t *testing.T, ctx context.Context, path string) net.Conn {
	t.Helper()
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("connecting to %s: %v", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
