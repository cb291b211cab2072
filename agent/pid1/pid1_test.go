//go:build linux

package pid1

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// zombies lists this process's children that are zombies.
func zombies(t *testing.T) []int {
	t.Helper()
	me := os.Getpid()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if ppid == me && f[0] == "Z" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(s)))
			out = append(out, pid)
		}
	}
	return out
}

// TestSuperviseReapsOrphans makes this test process a child subreaper (so orphans are
// reparented to it, as they are to PID 1 in a guest), supervises a shell that orphans
// three processes and exits 3, and checks that the exit status comes back and that no
// zombie is left behind.
func TestSuperviseReapsOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	st, err := Supervise([]string{"/bin/sh", "-c", "for i in 1 2 3; do (true &); done; sleep 0.3; exit 3"}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Exited() || st.ExitStatus() != 3 {
		t.Fatalf("status = %v, want exit 3", st)
	}
	if z := zombies(t); len(z) != 0 {
		t.Fatalf("zombie children left: %v", z)
	}
}

func TestMountAllRefusesOutsidePID1(t *testing.T) {
	if IsInit() {
		t.Skip("running as PID 1")
	}
	if err := MountAll(); err == nil || !strings.Contains(err.Error(), "not PID 1") {
		t.Fatalf("MountAll outside PID 1 = %v, want a refusal", err)
	}
}

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	dir := filepath.Join(sys, "class", "virtio-ports", "vport0p1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "name"), []byte("org.other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := FindPort(ctx, sys, "org.paddock.agent.0")
	if err == nil || !strings.Contains(err.Error(), "org.other") || !strings.Contains(err.Error(), "virtio_console") {
		t.Fatalf("FindPort of a missing port = %v, want an error listing the ports seen", err)
	}
}

func TestUptime(t *testing.T) {
	d, err := Uptime()
	if err != nil || d <= 0 {
		t.Fatalf("Uptime = %v, %v", d, err)
	}
}
