// Command paddock-agent runs inside each guest: as /init (PID 1) of a micro-VM built by
// package images, or as a service in a full OS image. Build it with CGO_ENABLED=0 so it
// is static (it runs with no libc in the initramfs):
//
//	CGO_ENABLED=0 go build -o bin/paddock-agent ./cmd/paddock-agent
//
// All the work lives in package agent.
package main

import (
	"os"

	"github.com/paddockvm/paddock/agent"
)

func main() { os.Exit(agent.Main(os.Args[1:])) }
