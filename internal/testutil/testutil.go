package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// RequireEnv is the variable that turns skips into failures.
const RequireEnv = "PADDOCK_REQUIRE_VM"

// Required reports whether PADDOCK_REQUIRE_VM=1 is set.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Skip skips t with the reason and the fix, or fails it when PADDOCK_REQUIRE_VM=1.
func Skip(t testing.TB, reason, fix string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (and %s=1 forbids skipping): %s", reason, RequireEnv, fix)
	}
	t.Skipf("%s; to run this test: %s", reason, fix)
}

// LibvirtURI is the libvirt URI integration tests use: $PADDOCK_TEST_LIBVIRT_URI or
// qemu:///system.
func LibvirtURI() string {
	if u := os.Getenv("PADDOCK_TEST_LIBVIRT_URI"); u != "" {
		return u
	}
	return "qemu:///system"
}

// RequireLibvirt skips (or fails, see Skip) unless a libvirt daemon answers at
// LibvirtURI(). It returns the URI. Fix: run `make setup` (scripts/setup.sh starts
// virtlogd and libvirtd).
func RequireLibvirt(t testing.TB) string {
	t.Helper()
	uri := LibvirtURI()
	if _, err := exec.LookPath("virsh"); err != nil {
		Skip(t, "virsh not found", "run `make setup` to install libvirt")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "virsh", "-c", uri, "version").CombinedOutput(); err != nil {
		Skip(t, "libvirt does not answer at "+uri+": "+string(out), "run `make setup` to start virtlogd and libvirtd")
	}
	if os.Geteuid() != 0 {
		Skip(t, "guest tests need root (qemu:///system, /boot, the libvirt images dir)", "run the tests as root, e.g. `sudo make test`")
	}
	return uri
}

// RequireKernel returns the newest /boot/vmlinuz-* and its version (the suffix after
// "vmlinuz-"), skipping (or failing) when there is none or its modules are missing.
func RequireKernel(t testing.TB) (path, version string) {
	t.Helper()
	matches, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(matches)
	if len(matches) == 0 {
		Skip(t, "no kernel in /boot", "run `make setup` (installs linux-image-amd64)")
	}
	path = matches[len(matches)-1]
	version = filepath.Base(path)[len("vmlinuz-"):]
	if _, err := os.Stat(filepath.Join("/lib/modules", version, "modules.dep")); err != nil {
		Skip(t, "no /lib/modules/"+version+"/modules.dep", "run `make setup` (installs linux-image-amd64)")
	}
	if f, err := os.Open(path); err != nil {
		Skip(t, "kernel "+path+" is not readable: "+err.Error(), "run the tests as root")
	} else {
		f.Close()
	}
	return path, version
}

// RequireBusybox returns the path of a static busybox, skipping (or failing) without one.
func RequireBusybox(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	Skip(t, "busybox not found", "run `make setup` (installs busybox-static)")
	return ""
}

// BusyCore keeps one CPU core busy until the test ends, so that a test of a CPU-load
// threshold sees real load: the kernel counts CPU time in 10 ms ticks, and an idle
// half second can read as 0 %.
func BusyCore(t testing.TB) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for x := 0; ; x++ {
			if x%1_000_000 == 0 {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}
