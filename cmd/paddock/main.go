// Command paddock is the Paddock server, host daemon and CLI. The command tree lives in
// internal/cli; main wires signals and the exit code. The first SIGINT or SIGTERM cancels
// the running command; a second forces exit.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/paddockvm/paddock/internal/cli"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "paddock: second signal, exiting now")
		os.Exit(130)
	}()
	os.Exit(cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
