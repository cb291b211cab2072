package sched_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// treeCPU returns the CPU time (user + system) used so far by the process pid and its
// live descendants, read from /proc (0 where /proc cannot be read). Benchmarks report
// CPU per item with it: on a machine whose cores are all busy, throughput follows the
// CPU each item costs in all the processes it goes through.
func treeCPU(pid int) time.Duration {
	children := map[int][]int{}
	cpu := map[int]time.Duration{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (in parentheses): state ppid ... utime(14) stime(15).
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		children[ppid] = append(children[ppid], p)
		cpu[p] = time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
	}
	var sum func(int) time.Duration
	sum = func(p int) time.Duration {
		d := cpu[p]
		for _, c := range children[p] {
			d += sum(c)
		}
		return d
	}
	return sum(pid)
}

// selfCPU returns the CPU time (user + system) this process has used so far: in the
// end-to-end benchmarks, the server's and the client's, without the agents and handlers.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
