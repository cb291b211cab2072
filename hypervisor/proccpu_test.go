package hypervisor

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestProcCPUTimes: CPUTimes' /proc reading lists the QEMU process of each prefixed
// pid file, and skips pid files of other domains, of processes that are not QEMU, and
// of processes that are gone. The "QEMU" is a copy of sleep named qemu-system-x86_64.
func TestProcCPUTimes(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here: CPUTimes asks libvirt")
	}
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary to run as a fake QEMU")
	}
	fake := filepath.Join(dir, "qemu-system-x86_64")
	copyFile(t, sleep, fake)
	start := func(path string) int {
		cmd := exec.Command(path, "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd.Process.Pid
	}
	pidFile := func(name string, pid int) {
		if err := os.WriteFile(filepath.Join(dir, name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pidFile("paddock-a", start(fake))
	pidFile("paddock-notqemu", start(sleep))
	pidFile("paddock-gone", 1<<22+12345) // beyond pid_max: no such process
	pidFile("other-b", start(fake))
	got, err := procCPUTimes(dir, "paddock-")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got["paddock-a"]; !ok || len(got) != 1 {
		t.Fatalf("procCPUTimes = %v; want paddock-a alone", got)
	}
	if c, ok := qemuCPU(os.Getpid()); ok {
		t.Fatalf("the test process was read as QEMU (%v)", c)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
