package testguest

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"

	"github.com/paddockvm/paddock/images/kmod"
	"github.com/paddockvm/paddock/internal/testutil"
)

// PortName is the virtio-serial port name the init script looks for; its device path is
// exported to the script as $PORT.
const PortName = "org.paddock.agent.0"

// Options says what goes into the guest.
type Options struct {
	// Script is run by busybox sh after setup, with $PORT set to the virtio-serial device
	// (empty when the guest has no such port). When it returns the guest powers off.
	Script string
	// Modules are loaded in addition to kmod.DefaultGuestModules.
	Modules []string
	// Files maps a guest path to a host file copied into the initramfs with its mode.
	Files map[string]string
}

// Guest is a bootable kernel and initramfs.
type Guest struct {
	Kernel        string
	Initrd        string
	KernelVersion string
	// Dir is a directory (mode 0755, removed at the end of the test) that QEMU, which
	// runs as libvirt-qemu, can traverse: put sockets and console logs here.
	Dir string
}

// Build writes an initramfs for opt and returns the guest. It skips (or fails) the
// test when the kernel, its modules or busybox are missing.
func Build(t testing.TB, opt Options) Guest {
	t.Helper()
	kernel, kver := testutil.RequireKernel(t)
	busybox := testutil.RequireBusybox(t)
	dir := QEMUDir(t)
	mods, err := kmod.Resolve(filepath.Join("/lib/modules", kver), append(append([]string{}, kmod.DefaultGuestModules...), opt.Modules...)...)
	if err != nil {
		t.Fatalf("resolving guest modules: %v", err)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := writeInitramfs(initrd, busybox, mods, opt); err != nil {
		t.Fatalf("building test initramfs: %v", err)
	}
	return Guest{Kernel: kernel, Initrd: initrd, KernelVersion: kver, Dir: dir}
}

// QEMUDir makes a fresh directory that the QEMU process (user libvirt-qemu) can reach:
// t.TempDir() is mode 0700, so this one lives under /tmp with mode 0755 and is removed
// in t.Cleanup.
func QEMUDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "paddock-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// InitScript returns the /init script for the modules and the test script.
func InitScript(mods []kmod.Module, script string) string {
	var b strings.Builder
	b.WriteString("#!/bin/busybox sh\n")
	b.WriteString("/bin/busybox --install -s /bin\n")
	b.WriteString("export PATH=/bin\n")
	b.WriteString("mkdir -p /proc /sys /dev /tmp\n")
	b.WriteString("mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\nmount -t tmpfs tmpfs /tmp\n")
	for _, m := range mods {
		fmt.Fprintf(&b, "insmod /lib/modules/%s || echo 'testguest: insmod %s failed'\n", m.RelPath, m.Name)
	}
	fmt.Fprintf(&b, `PORT=""
for i in $(seq 1 100); do
  for p in /sys/class/virtio-ports/*; do
    [ -f "$p/name" ] && [ "$(cat "$p/name")" = %q ] && PORT=/dev/$(basename "$p")
  done
  [ -n "$PORT" ] && [ -e "$PORT" ] && break
  sleep 0.05
done
export PORT
`, PortName)
	b.WriteString(script)
	b.WriteString("\npoweroff -f\n")
	return b.String()
}

type entry struct {
	mode cpio.FileMode
	data []byte
	link string
}

func writeInitramfs(out, busybox string, mods []kmod.Module, opt Options) error {
	entries := map[string]entry{}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			entries[strings.TrimPrefix(d, "/")] = entry{mode: cpio.TypeDir | 0o755}
		}
	}
	addFile := func(guest string, data []byte, perm cpio.FileMode) {
		addDirs(guest)
		entries[strings.TrimPrefix(guest, "/")] = entry{mode: cpio.TypeReg | perm, data: data}
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("reading busybox: %w", err)
	}
	addFile("/bin/busybox", bb, 0o755)
	for _, d := range []string{"/proc/x", "/sys/x", "/dev/x", "/tmp/x"} {
		addDirs(d)
	}
	for _, m := range mods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("reading module %s: %w", m.Path, err)
		}
		if strings.HasSuffix(m.RelPath, ".xz") || strings.HasSuffix(m.RelPath, ".zst") {
			return fmt.Errorf("module %s is compressed; testguest loads only plain .ko files", m.Path)
		}
		addFile("/lib/modules/"+m.RelPath, data, 0o644)
	}
	for guest, host := range opt.Files {
		fi, err := os.Stat(host)
		if err != nil {
			return fmt.Errorf("guest file %s: %w", guest, err)
		}
		data, err := os.ReadFile(host)
		if err != nil {
			return fmt.Errorf("guest file %s: %w", guest, err)
		}
		addFile(guest, data, cpio.FileMode(fi.Mode().Perm()))
	}
	addFile("/init", []byte(InitScript(mods, opt.Script)), 0o755)

	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		e := entries[n]
		hdr := &cpio.Header{Name: n, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch, Links: 1}
		if e.mode.IsDir() {
			hdr.Links = 2
		}
		if err := w.WriteHeader(hdr); err != nil {
			return fmt.Errorf("cpio header %s: %w", n, err)
		}
		if len(e.data) > 0 {
			if _, err := w.Write(e.data); err != nil {
				return fmt.Errorf("cpio data %s: %w", n, err)
			}
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("closing cpio: %w", err)
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}
