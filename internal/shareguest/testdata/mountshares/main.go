// Command mountshares runs inside a shareguest test guest: it mounts the data plane's
// shares exactly as the agent's PID 1 does (pid1.MountShares with pid1.DataShares),
// reads input.bin from the input share and prints its sha256 and size, copies it to
// output.bin on the output share, and checks that the input share refuses writes. Each
// result is one "mountshares: key=value" line on stdout (the guest's console).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/paddockvm/paddock/agent/pid1"
	"github.com/paddockvm/paddock/api/guestabi"
)

func main() {
	mounted, err := pid1.MountShares("/sys", pid1.DataShares, os.Stdout)
	if err != nil {
		fail("mount", err)
	}
	fmt.Printf("mountshares: mounted=%d\n", len(mounted))
	in, err := os.Open(filepath.Join(guestabi.InDir, "input.bin"))
	if err != nil {
		fail("open-input", err)
	}
	out, err := os.Create(filepath.Join(guestabi.OutDir, "output.bin"))
	if err != nil {
		fail("create-output", err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(out, h), in, make([]byte, 1<<20))
	if err != nil {
		fail("copy", err)
	}
	if err := out.Close(); err != nil {
		fail("close-output", err)
	}
	fmt.Printf("mountshares: read=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
	if err := os.WriteFile(filepath.Join(guestabi.InDir, "intruder"), []byte("x"), 0o644); err == nil {
		fmt.Println("mountshares: input-share-writable=true")
	} else {
		fmt.Printf("mountshares: input-share-writable=false (%v)\n", err)
	}
	fmt.Println("mountshares: done")
}

func fail(step string, err error) {
	fmt.Printf("mountshares: error=%s: %v\n", step, err)
	os.Exit(1)
}
