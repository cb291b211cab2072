package runner

import (
	"os/exec"
	"syscall"
)

// tieToAgent makes the handler process die with the agent: the kernel sends it
// SIGKILL when the thread that started it exits (the Go runtime does not end its
// threads, so in practice when the agent process dies, even by SIGKILL), and it
// gets its own process group, so killGroup takes its children down as well and a
// terminal's Ctrl-C reaches the agent only (which stops its handlers in order).
func tieToAgent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
