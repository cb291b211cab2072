package hypervisor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"libvirt.org/go/libvirt"
)

var errDialForTest = errors.New("dial refused by the test")

// TestReconnectAfterLibvirtdRestart drives the reconnect logic against libvirt's
// in-process test driver: libvirt's close callback (what a libvirtd restart triggers)
// makes the Libvirt dial again, with backoff past failed dials, and carry on with the
// domains that kept running and with lifecycle events on the same subscription. A
// real libvirtd restart is not done here: the daemon on these machines is shared by
// other sessions' guests.
func TestReconnectAfterLibvirtdRestart(t *testing.T) {
	cfg := DefaultConfig()
	cfg.URI = "test:///default"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Connect(ctx, cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.reconnectMin, l.reconnectMax = 10*time.Millisecond, 40*time.Millisecond
	retired := make(chan struct{})
	l.retired = func() { close(retired) }
	failures := 3
	l.dial = func(uri string) (*libvirt.Connect, error) {
		if failures > 0 {
			failures--
			return nil, errDialForTest
		}
		return libvirt.NewConnect(uri)
	}
	events, err := l.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k, i := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	for _, f := range []string{k, i} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := cfg.Prefix + "reconnect-before"
	if _, err := l.Create(ctx, DomainSpec{Name: before, VCPUs: 1, MemoryMiB: 128, Kernel: k, Initrd: i}); err != nil {
		t.Fatal(err)
	}
	defer l.Destroy(context.Background(), before)

	old := l.c()
	l.onClose(old, libvirt.CONNECT_CLOSE_REASON_EOF)
	l.onClose(old, libvirt.CONNECT_CLOSE_REASON_EOF) // a second callback starts no second loop
	deadline := time.Now().Add(time.Minute)
	for l.Reconnects() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect within a minute of the close callback")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l.c() == old || failures != 0 || l.Reconnects() != 1 {
		t.Fatalf("after the reconnect: same connection %v, dial failures left %d, reconnects %d; want a new connection after 3 failed dials, once",
			l.c() == old, failures, l.Reconnects())
	}
	select { // the old connection's callback is gone: events below come through the new one
	case <-retired:
	case <-time.After(time.Minute):
		t.Fatal("the replaced connection was not closed within a minute")
	}
	// The guest that kept running is still there, and new work goes through the new
	// connection with its events on the old subscription.
	doms, err := l.List(ctx)
	if err != nil || len(doms) == 0 {
		t.Fatalf("List after reconnect = %v, %v", doms, err)
	}
	after := cfg.Prefix + "reconnect-after"
	if _, err := l.Create(ctx, DomainSpec{Name: after, VCPUs: 1, MemoryMiB: 128, Kernel: k, Initrd: i}); err != nil {
		t.Fatal(err)
	}
	defer l.Destroy(context.Background(), after)
	for {
		select {
		case e := <-events:
			if e.Domain == after && e.Type == EventStarted {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no started event for a domain created after the reconnect")
		}
	}
}
