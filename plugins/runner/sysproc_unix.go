//go:build unix && !linux

package runner

import (
	"os/exec"
	"syscall"
)

// tieToAgent gives the handler its own process group (killGroup takes its
// children down too). Only Linux has a parent-death signal: elsewhere a handler
// outlives an agent killed by SIGKILL until its next call fails.
func tieToAgent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
