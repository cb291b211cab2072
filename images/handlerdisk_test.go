package images

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/internal/testutil"
)

// TestBootHandlerDisk boots an image with a handler three times (TCG): with its
// handler disk attached (PID 1 finds it by serial and mounts it: the console says so,
// and the agent writes its ready line), without it, and with a damaged copy of it. A
// guest without a usable handler disk must not hang: PID 1 prints what it saw on the
// console and powers off.
func TestBootHandlerDisk(t *testing.T) {
	hv := connectHV(t)
	dir := qemuDir(t)
	store, err := Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Agent: agentBinary(t), Handlers: []Handler{{Name: "tiny", Path: tinyHandler(t, "")}}}
	testutil.RequireKernel(t)
	img, err := store.Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if img.Manifest.HandlerDisk == nil {
		t.Fatal("image with a handler has no handler disk")
	}
	disk := func(path string) []hypervisor.Disk {
		return []hypervisor.Disk{{Path: path, Format: "raw", Target: "vda", ReadOnly: true, Shareable: true, Serial: HandlerDiskSerial}}
	}

	t.Run("attached", func(t *testing.T) {
		g := bootGuest(t, hv, dir, img.Kernel(), img.Initrd(), disk(img.HandlerDiskPath()))
		_, r := dialGuest(t, g.Channels[0].SocketPath, time.Now().Add(bootTimeout))
		if ready := readGuestLine(t, r, g); !readyRE.MatchString(ready) {
			t.Fatalf("ready line %q", ready)
		}
		console, _ := os.ReadFile(g.ConsoleLog)
		if !bytes.Contains(console, []byte("mounted the handler disk /dev/vda read-only on "+GuestHandlersDir)) {
			t.Errorf("console lacks the handler disk's mount:\n%s", console)
		}
	})
	t.Run("missing", func(t *testing.T) {
		g := bootGuest(t, hv, dir, img.Kernel(), img.Initrd(), nil)
		console := waitPoweredOff(t, hv, g)
		for _, want := range []string{"paddock-agent: fatal: handler disk: no block device with serial \"paddock-handlers\"", "did not attach the image's handler disk", "powering off"} {
			if !strings.Contains(console, want) {
				t.Errorf("console lacks %q:\n%s", want, console)
			}
		}
	})
	t.Run("damaged", func(t *testing.T) {
		b := readAll(t, img.HandlerDiskPath())
		copy(b[1024:2048], make([]byte, 1024)) // the erofs superblock
		bad := filepath.Join(dir, "damaged.erofs")
		if err := os.WriteFile(bad, b, 0o644); err != nil {
			t.Fatal(err)
		}
		g := bootGuest(t, hv, dir, img.Kernel(), img.Initrd(), disk(bad))
		console := waitPoweredOff(t, hv, g)
		for _, want := range []string{"paddock-agent: fatal: handler disk: mounting /dev/vda (serial \"paddock-handlers\") read-only as erofs", "rebuild the image", "powering off"} {
			if !strings.Contains(console, want) {
				t.Errorf("console lacks %q:\n%s", want, console)
			}
		}
	})
}

// waitPoweredOff waits (up to bootTimeout) until the guest is gone or shut off and
// returns its console log.
func waitPoweredOff(t *testing.T, hv *hypervisor.Libvirt, g hypervisor.DomainSpec) string {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		d, err := hv.Lookup(context.Background(), g.Name)
		if errors.Is(err, hypervisor.ErrNotFound) || (err == nil && d.State == hypervisor.StateShutoff) {
			break
		}
		if time.Now().After(deadline) {
			console, _ := os.ReadFile(g.ConsoleLog)
			t.Fatalf("guest %s still %v (%v) after %v; console:\n%s", g.Name, d.State, err, bootTimeout, console)
		}
		time.Sleep(200 * time.Millisecond)
	}
	console, _ := os.ReadFile(g.ConsoleLog)
	return string(console)
}

// TestBuildNeedsMkfsErofs: without mkfs.erofs on PATH, building an image with handlers
// fails with ErrInvalid naming the program and the package to install.
func TestBuildNeedsMkfsErofs(t *testing.T) {
	spec := unitSpec(t)
	t.Setenv("PATH", t.TempDir())
	_, err := mustOpen(t).Build(context.Background(), spec)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "mkfs.erofs") || !strings.Contains(err.Error(), "erofs-utils") {
		t.Fatalf("Build without mkfs.erofs: %v, want ErrInvalid naming mkfs.erofs and erofs-utils", err)
	}
}

// TestCheckHandlerDisk: a handler disk changed after the build is refused with a
// message that says to rebuild; a missing one too.
func TestCheckHandlerDisk(t *testing.T) {
	img, err := mustOpen(t).Build(context.Background(), unitSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	p := img.HandlerDiskPath()
	b := readAll(t, p)
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := img.CheckHandlerDisk(); err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "rebuild the image") {
		t.Errorf("CheckHandlerDisk of a changed disk: %v", err)
	}
	os.Remove(p)
	if err := img.CheckHandlerDisk(); err == nil || !strings.Contains(err.Error(), "rebuild the image") {
		t.Errorf("CheckHandlerDisk of a missing disk: %v", err)
	}
}
