// Command paddock-agent runs inside each guest (as PID 1 of a micro-VM, or as a service in
// a full OS image). It is built with CGO_ENABLED=0 so that it is a static binary.
package main

import (
	"fmt"
	"os"

	"github.com/paddockvm/paddock/internal/buildinfo"
)

func main() {
	fmt.Fprintf(os.Stderr, "paddock-agent %s: not wired yet\n", buildinfo.String())
	os.Exit(1)
}
