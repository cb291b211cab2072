//go:build !linux

package runner

import "time"

// waitExit returns once the handler process has exited, polling exited.
func waitExit(_ int, exited func() bool) { pollExit(exited, 20*time.Millisecond) }
