package images

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
)

// TestBootShutdownPowerButton: a graceful Shutdown (libvirt's ACPI power button) of a
// guest running the agent as PID 1 ends with the guest powering itself off — the domain
// stops with detail "shutdown", not "destroyed", well before the timeout — and the
// console shows PID 1 reacting to the button (KEY_POWER via the button and evdev
// modules), stopping the agent and powering off.
func TestBootShutdownPowerButton(t *testing.T) {
	hv := connectHV(t)
	dir := qemuDir(t)
	store, err := Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	img := hostImage(t, store, `{}`)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := hv.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := bootGuest(t, hv, dir, img.Kernel(), img.Initrd(), nil)
	_, r := dialGuest(t, spec.Channels[0].SocketPath, time.Now().Add(bootTimeout))
	if ready := readGuestLine(t, r, spec); !readyRE.MatchString(ready) {
		t.Fatalf("ready line %q", ready)
	}
	if d, err := hv.Lookup(ctx, spec.Name); err != nil || d.State != hypervisor.StateRunning {
		console, _ := os.ReadFile(spec.ConsoleLog)
		t.Fatalf("guest %s before Shutdown: %+v, %v; console:\n%s", spec.Name, d, err, console)
	}

	const timeout = 60 * time.Second
	start := time.Now()
	if err := hv.Shutdown(ctx, spec.Name, timeout); err != nil {
		t.Fatalf("Shutdown(%s, %v): %v", spec.Name, timeout, err)
	}
	took := time.Since(start)
	console, _ := os.ReadFile(spec.ConsoleLog)
	t.Logf("Shutdown of %s took %v", spec.Name, took.Round(time.Millisecond))
	for _, l := range bytes.Split(console, []byte("\n")) {
		if bytes.Contains(l, []byte("paddock-agent[1]")) {
			t.Logf("console: %s", bytes.TrimSpace(l))
		}
	}

	var stopped *hypervisor.Event
	wait := time.After(30 * time.Second)
	for stopped == nil {
		select {
		case ev := <-events:
			if ev.Domain == spec.Name && ev.Type == hypervisor.EventStopped {
				stopped = &ev
			}
		case <-wait:
			t.Fatalf("no stopped event for %s within 30 s of Shutdown returning; console:\n%s", spec.Name, console)
		}
	}
	if stopped.Detail != "shutdown" {
		t.Errorf("stopped event detail %q, want %q (the guest did not power itself off); console:\n%s", stopped.Detail, "shutdown", console)
	}
	if took > timeout/2 {
		t.Errorf("Shutdown took %v of its %v timeout", took, timeout)
	}
	for _, want := range []string{
		"paddock-agent[1]: init: watching the power button",
		"paddock-agent[1]: power button pressed",
		"paddock-agent[1]: agent stopped",
		"syncing and powering off",
	} {
		if !bytes.Contains(console, []byte(want)) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
	if bytes.Contains(console, []byte("paddock-agent: fatal:")) {
		t.Errorf("console shows a fatal error (the agent stopped on its own, not on the button):\n%s", console)
	}
}
