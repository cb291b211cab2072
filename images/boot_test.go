package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

// bootTimeout bounds one TCG boot; the Debian kernel under TCG takes ~10 s.
const bootTimeout = 180 * time.Second

func connectHV(t testing.TB) *hypervisor.Libvirt {
	t.Helper()
	uri := testutil.RequireLibvirt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := hypervisor.Connect(ctx, hypervisor.Config{URI: uri, Prefix: "paddock-", Accel: hypervisor.AccelTCG},
		hypervisor.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("connecting to libvirt at %s: %v", uri, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// qemuDir is a 0755 directory under /tmp that QEMU (user libvirt-qemu) can traverse.
func qemuDir(t testing.TB) string { return testguest.QEMUDir(t) }

var guestSeq int

// bootGuest creates a 1-vCPU, 256 MiB TCG guest from kernel and initrd with the agent
// channel, a console log and the disks; it is destroyed in t.Cleanup.
func bootGuest(t testing.TB, hv *hypervisor.Libvirt, dir, kernel, initrd string, disks []hypervisor.Disk) (spec hypervisor.DomainSpec) {
	t.Helper()
	guestSeq++
	name := fmt.Sprintf("paddock-imgtest-%d-%d", os.Getpid(), guestSeq)
	spec = hypervisor.DomainSpec{
		Name: name, VCPUs: 1, MemoryMiB: 256,
		Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 quiet",
		Disks:      disks,
		Channels:   []hypervisor.Channel{{Name: agent.DefaultPort, SocketPath: filepath.Join(dir, fmt.Sprintf("agent-%d.sock", guestSeq))}},
		ConsoleLog: filepath.Join(dir, fmt.Sprintf("console-%d.log", guestSeq)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := hv.Create(ctx, spec); err != nil {
		t.Fatalf("creating guest %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := hv.Destroy(ctx, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("destroying %s: %v", name, err)
		}
	})
	return spec
}

// dialGuest connects to the guest's channel socket (created by libvirt) as a client.
func dialGuest(t testing.TB, socket string, deadline time.Time) (net.Conn, *bufio.Reader) {
	t.Helper()
	var err error
	for time.Now().Before(deadline) {
		var c net.Conn
		if c, err = net.Dial("unix", socket); err == nil {
			c.SetReadDeadline(deadline)
			t.Cleanup(func() { c.Close() })
			return c, bufio.NewReader(c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("connecting to %s: %v", socket, err)
	return nil, nil
}

func readGuestLine(t testing.TB, r *bufio.Reader, spec hypervisor.DomainSpec) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		console, _ := os.ReadFile(spec.ConsoleLog)
		t.Fatalf("reading a line from guest %s (got %q): %v\nconsole:\n%s", spec.Name, line, err, console)
	}
	return strings.TrimRight(line, "\n")
}

var readyRE = regexp.MustCompile(`^PADDOCK-AGENT READY version=(\S+) boot_ms=(\d+)$`)

func hostImage(t testing.TB, store *Store, cfg string) Image {
	t.Helper()
	testutil.RequireKernel(t)
	img, err := store.Build(context.Background(), Spec{Agent: agentBinary(t), AgentConfig: json.RawMessage(cfg)})
	if err != nil {
		t.Fatalf("building image on the host kernel: %v", err)
	}
	return img
}

// TestBootAgentReady boots the built image under libvirt (TCG) with a scratch disk.
// It checks that the agent runs as PID 1 (its init line on the console), writes its
// ready line on the virtio-serial port, sees the overlay as /dev/vda and writes to it
// (the agent's self-check writes a pattern with O_DIRECT and reads it back); then, with
// the guest destroyed, that the pattern landed in the overlay and not in the base, and
// that removing the scratch disk removes the overlay file.
func TestBootAgentReady(t *testing.T) {
	hv := connectHV(t)
	dir := qemuDir(t)
	store, err := Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	pattern := fmt.Sprintf("paddock-boot-test-%d-", time.Now().UnixNano())
	img := hostImage(t, store, fmt.Sprintf(`{"self_check": {"disks": ["/dev/vda"], "pattern": %q}}`, pattern))

	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	scratch, err := NewScratch(ctx, dir, base, 32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scratch.Remove() })

	spec := bootGuest(t, hv, dir, img.Kernel(), img.Initrd(), []hypervisor.Disk{{Path: scratch.Path, Format: ScratchFormat, Target: "vda"}})
	_, r := dialGuest(t, spec.Channels[0].SocketPath, time.Now().Add(bootTimeout))
	ready := readGuestLine(t, r, spec)
	m := readyRE.FindStringSubmatch(ready)
	if m == nil || m[1] != testAgentVersion {
		t.Fatalf("ready line %q, want %q with version %s", ready, readyRE, testAgentVersion)
	}
	t.Logf("guest %s: %s", spec.Name, ready)
	check := readGuestLine(t, r, spec)
	if want := fmt.Sprintf("%s disk=/dev/vda ok=true size=%d wrote=4096", agent.SelfCheckPrefix, 32<<20); check != want {
		t.Fatalf("self-check line %q, want %q", check, want)
	}
	console, _ := os.ReadFile(spec.ConsoleLog)
	if !bytes.Contains(console, []byte("paddock-agent[1]: init: mounted")) {
		t.Errorf("console lacks the agent's PID-1 init line:\n%s", console)
	}

	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := hv.Destroy(dctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "overlay.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", scratch.Path, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	got := readAll(t, raw)
	want := []byte(strings.Repeat(pattern, 4096/len(pattern)+1)[:4096])
	if !bytes.Equal(got[:4096], want) {
		t.Errorf("overlay does not hold the pattern the guest wrote: %q…", got[:64])
	}
	if b := readAll(t, base); !bytes.Equal(b[:4096], make([]byte, 4096)) {
		t.Errorf("the base image was modified")
	}
	if err := scratch.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(scratch.Path); !os.IsNotExist(err) {
		t.Errorf("overlay %s still exists after Remove: %v", scratch.Path, err)
	}
	if _, err := os.Stat(base); err != nil {
		t.Errorf("base image gone with the overlay: %v", err)
	}
}

// TestBootFatalPowersOff: a fatal error in the agent (a self-check of a disk the guest
// does not have) is printed on the console and PID 1 powers off, so the (transient)
// domain disappears instead of hanging.
func TestBootFatalPowersOff(t *testing.T) {
	hv := connectHV(t)
	dir := qemuDir(t)
	store, err := Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	img := hostImage(t, store, `{"self_check": {"disks": ["/dev/vdq"]}}`)
	spec := bootGuest(t, hv, dir, img.Kernel(), img.Initrd(), nil)
	_, r := dialGuest(t, spec.Channels[0].SocketPath, time.Now().Add(bootTimeout))
	if ready := readGuestLine(t, r, spec); !readyRE.MatchString(ready) {
		t.Fatalf("ready line %q", ready)
	}
	if line := readGuestLine(t, r, spec); !strings.Contains(line, "disk=/dev/vdq ok=false") {
		t.Fatalf("self-check line %q, want a failure for /dev/vdq", line)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		d, err := hv.Lookup(context.Background(), spec.Name)
		if errors.Is(err, hypervisor.ErrNotFound) || (err == nil && d.State == hypervisor.StateShutoff) {
			break
		}
		if time.Now().After(deadline) {
			console, _ := os.ReadFile(spec.ConsoleLog)
			t.Fatalf("guest %s still %v (%v) 60 s after the fatal error; console:\n%s", spec.Name, d.State, err, console)
		}
		time.Sleep(200 * time.Millisecond)
	}
	console, _ := os.ReadFile(spec.ConsoleLog)
	for _, want := range []string{"paddock-agent: fatal:", "/dev/vdq", "powering off"} {
		if !bytes.Contains(console, []byte(want)) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
}
