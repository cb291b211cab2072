//go:build unix

package sdk

import "syscall"

const cpuUsageSupported = true

// cpuTime returns the process's user+system CPU time in nanoseconds, or -1.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
