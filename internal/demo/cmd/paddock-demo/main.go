// Command paddock-demo drives the demo scenario (package demo) against a running
// Paddock server through the paddock CLI, then checks what it printed against the
// hand-checked figures. `make demo` runs it; by hand:
//
//	go run ./internal/demo/cmd/paddock-demo --server http://127.0.0.1:7070
//
// It exits 0 when every task ended as it must and every figure matched, 1 otherwise.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/paddockvm/paddock/internal/demo"
)

func main() {
	var cfg demo.Config
	flag.StringVar(&cfg.Server, "server", "http://127.0.0.1:7070", "URL of the server's client API")
	flag.StringVar(&cfg.Paddock, "paddock", "bin/paddock", "path of the paddock CLI")
	flag.StringVar(&cfg.Examples, "examples", "examples/demo", "directory of the demo inputs")
	flag.DurationVar(&cfg.AgentWait, "agent-wait", 5*time.Minute, "how long to wait for agents serving every task type")
	flag.DurationVar(&cfg.TaskWait, "task-wait", 5*time.Minute, "how long to wait for the tasks")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "paddock-demo: unexpected argument %q (flags only; see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	cfg.Token = os.Getenv("PADDOCK_CLIENT_TOKEN")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var buf bytes.Buffer
	cfg.Out = io.MultiWriter(os.Stdout, &buf)
	if _, err := demo.Run(ctx, cfg); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "paddock-demo: interrupted")
			os.Exit(130)
		}
		fmt.Fprintf(os.Stderr, "paddock-demo: %v\n", err)
		os.Exit(1)
	}
	if err := demo.Check(buf.String()); err != nil {
		fmt.Fprintf(os.Stderr, "paddock-demo: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("every result matches the hand-checked figures (%d lines and %d leaderboard rows, internal/demo/expected.go)\n",
		len(demo.Expected), len(demo.ExpectedLeaderboard))
}
