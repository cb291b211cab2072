package testguest

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testutil"
)

// TestBootsUnderQEMU boots the test guest with qemu-system-x86_64 directly (no libvirt),
// and reads the line its script writes on the virtio-serial port.
func TestBootsUnderQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		testutil.Skip(t, "qemu-system-x86_64 not found", "run `make setup` (installs qemu-system-x86)")
	}
	g := Build(t, Options{Script: `echo "hello from $(uname -r) on $PORT" > "$PORT"; sleep 2`})
	sock := filepath.Join(g.Dir, "port.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-m", "256", "-smp", "1", "-nographic", "-no-reboot",
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", "console=ttyS0 quiet panic=-1",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=c0,path="+sock+",server=on,wait=off",
		"-device", "virtserialport,chardev=c0,name="+PortName)
	var console strings.Builder
	cmd.Stdout, cmd.Stderr = &console, &console
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	var conn net.Conn
	for conn == nil {
		if conn, err = net.Dial("unix", sock); err != nil {
			conn = nil
			if ctx.Err() != nil {
				t.Fatalf("port socket never appeared: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the guest's line: %v\nconsole:\n%s", err, console.String())
	}
	if want := "hello from " + g.KernelVersion + " on /dev/vport"; !strings.HasPrefix(line, want) {
		t.Fatalf("guest wrote %q, want prefix %q\nconsole:\n%s", line, want, console.String())
	}
}
