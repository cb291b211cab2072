// Command guestecho runs inside a test guest: it writes the agent's ready line on
// the org.paddock.agent.0 virtio-serial port, then serves transport sessions on
// it, echoing every byte back, one session after another.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/paddockvm/paddock/agent/transport"
)

func main() {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var path string
	for {
		p, err := transport.FindPort(transport.PortName)
		if err == nil {
			path = p
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestecho:", err)
		os.Exit(1)
	}
	fmt.Fprintf(f, "PADDOCK-AGENT READY guestecho port=%s\n", path)
	f.Close()
	g, err := transport.OpenPort(ctx, transport.PortName, transport.Options{Name: "guestecho", Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "guestecho:", err)
		os.Exit(1)
	}
	for n := 1; ; n++ {
		c, err := g.Dial(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "guestecho: dial:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		fmt.Fprintf(os.Stderr, "guestecho: session %d (%v) established\n", n, c.LocalAddr())
		_, err = io.Copy(c, c)
		fmt.Fprintf(os.Stderr, "guestecho: session %d ended: %v\n", n, err)
		c.Close()
	}
}
