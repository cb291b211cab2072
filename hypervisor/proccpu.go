package hypervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// systemQEMURunDir is where the system libvirtd's QEMU driver keeps each running
// domain's pid file (<name>.pid).
const systemQEMURunDir = "/run/libvirt/qemu"

// userHZ is the unit of utime and stime in /proc/<pid>/stat (USER_HZ: 100 on Linux).
const userHZ = 100

// procRunDir is the directory of QEMU pid files CPUTimes reads for uri, or "" when
// CPUTimes must ask libvirt: only the local system daemon's QEMU driver
// (qemu:///system) with its run directory present.
func procRunDir(uri string) string {
	if uri != "qemu:///system" {
		return ""
	}
	if fi, err := os.Stat(systemQEMURunDir); err != nil || !fi.IsDir() {
		return ""
	}
	return systemQEMURunDir
}

// procCPUTimes returns the CPU time used so far by the QEMU process of every running
// domain whose name starts with prefix, from its pid file in dir and its
// /proc/<pid>/stat (utime + stime: every thread's, vCPUs and I/O, as the host sees
// them). It asks libvirt nothing: libvirt locks each domain to read its statistics,
// and a domain being created or restored held its lock, under load, for over a
// minute, which held back every guest's CPU time (issue 12). A pid file whose process
// is gone or is not QEMU is skipped.
func procCPUTimes(dir, prefix string) (map[string]time.Duration, error) {
	files, err := filepath.Glob(filepath.Join(dir, prefix+"*.pid"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Duration, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if t, ok := qemuCPU(pid); ok {
			out[strings.TrimSuffix(filepath.Base(f), ".pid")] = t
		}
	}
	return out, nil
}

// qemuCPU is the CPU time of process pid, if it is a QEMU process.
func qemuCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// pid (comm) state ...: comm may hold spaces; utime and stime are fields 14 and 15.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open || !strings.HasPrefix(s[open+1:end], "qemu") {
		return 0, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * time.Second / userHZ, true
}
