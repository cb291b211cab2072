package pgtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CPU returns the processor time the server's processes have used so far (the
// postmaster, its live children, and the children that have exited), read from
// /proc: on a machine shared with other work, a benchmark's CPU time per task is
// steadier than its rate. It returns 0 where /proc is missing.
func (s *Server) CPU() time.Duration {
	b, err := os.ReadFile(filepath.Join(s.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	var ticks int64
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		f := procStat(e.Name())
		if f == nil {
			continue
		}
		// f[0] is the state (field 3 of stat); ppid is f[1], utime..cstime f[11..14].
		switch {
		case e.Name() == pm:
			ticks += atoi(f[11]) + atoi(f[12]) + atoi(f[13]) + atoi(f[14])
		case f[1] == pm:
			ticks += atoi(f[11]) + atoi(f[12])
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procStat returns the fields of /proc/pid/stat after the command name, or nil.
func procStat(pid string) []string {
	if pid == "" || pid[0] < '0' || pid[0] > '9' {
		return nil
	}
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil
	}
	return f
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// selfCPU returns the processor time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// MeasureCPU runs fn and reports, per benchmark op, the server's processor time
// (pg-cpu-µs/op) and this process's (go-cpu-µs/op): on a shared machine these vary
// less than the rate, and their sum is what the rate costs.
func (s *Server) MeasureCPU(b *testing.B, fn func()) {
	pg, self := s.CPU(), selfCPU()
	fn()
	if b.N == 0 {
		return
	}
	b.ReportMetric(float64((s.CPU()-pg).Microseconds())/float64(b.N), "pg-cpu-µs/op")
	b.ReportMetric(float64((selfCPU()-self).Microseconds())/float64(b.N), "go-cpu-µs/op")
}
