// Command paddock is the Paddock server, host daemon and CLI. The command tree lives in
// internal/cli; main wires signals and the exit code. The first SIGINT, SIGTERM or SIGHUP
// cancels the running command, which stops cleanly (paddock dev destroys its guests); a
// second runs the command's forced-exit cleanup (cli.ForceStop: paddock dev destroys its
// guests at once, without draining) and exits; a third exits at once. SIGPIPE does not
// kill the process: a closed stdout (the reader of paddock dev's progress went away)
// makes writes fail instead of ending the process half way through its cleanup.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/paddockvm/paddock/internal/cli"
)

// forceStopTimeout bounds the forced-exit cleanup after a second signal.
const forceStopTimeout = 30 * time.Second

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 3)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	go func() {
		for range pipe { // writes to the broken pipe fail with EPIPE
		}
	}()
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "paddock: second signal: forced cleanup, then exit (a third signal exits at once)")
		go func() {
			<-sigs
			os.Exit(130)
		}()
		cli.ForceStop(forceStopTimeout)
		os.Exit(130)
	}()
	os.Exit(cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
