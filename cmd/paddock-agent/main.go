// Command paddock-agent runs inside each guest: as /init (PID 1) of a micro-VM built by
// package images, or as a service in a full OS image. Build it with CGO_ENABLED=0 so it
// is static (it runs with no libc in the initramfs), and small (`make build` does this):
//
//	CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -ldflags '-s -w' -o bin/paddock-agent ./cmd/paddock-agent
//
// The grpcnotrace tag takes 2.4 MB off the binary (grpc's x/net/trace uses html/template,
// which keeps every exported method of every linked type); every guest holds the binary
// in memory.
//
// All the work lives in package agent.
package main

import (
	"os"

	"github.com/paddockvm/paddock/agent"
)

func main() { os.Exit(agent.Main(os.Args[1:])) }
