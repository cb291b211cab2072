//go:build unix

package runner

import (
	"os/exec"
	"syscall"
)

// killGroup sends SIGKILL to the handler's process group (the handler and any
// child it started), which tieToAgent made.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
