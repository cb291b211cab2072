package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Bin is one binary a test builds: Out is its path under the output directory, Pkg its
// package ("./cmd/paddock", relative to the module root, or an import path). Binaries
// are built like `make build` does: paddock with cgo (it links libvirt), everything else
// static, stripped and small (CGO_ENABLED=0, -trimpath, -tags grpcnotrace, -s -w: see
// GuestBuildFlags), fit for a guest image.
type Bin struct{ Out, Pkg string }

// PaddockBins lists paddock, paddock-agent and the named example handlers
// (./plugins/handlers/<name> as handlers/<name>), the layout of `make build`.
func PaddockBins(handlers ...string) []Bin {
	bs := []Bin{{"paddock", "./cmd/paddock"}, {"paddock-agent", "./cmd/paddock-agent"}}
	for _, h := range handlers {
		bs = append(bs, Bin{filepath.Join("handlers", h), "./plugins/handlers/" + h})
	}
	return bs
}

// GuestBuildFlags are the `go build` flags (with CGO_ENABLED=0) of binaries that run in
// guests, as the Makefile's GUEST_BUILD: grpcnotrace drops grpc's x/net/trace, whose
// html/template use stops the linker from removing unused exported methods (the agent
// shrinks from 14.0 to 11.6 MB, pages each guest's initramfs holds in memory).
var GuestBuildFlags = []string{"-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w"}

// BinSet builds its binaries once per test process into a fresh 0755 temporary
// directory (QEMU never reads it, but an image build runs the handlers from it). Call
// Remove from TestMain after m.Run.
type BinSet struct {
	Prefix string // of the temporary directory's name, e.g. "paddock-e2e-bin-"
	Bins   []Bin

	once sync.Once
	dir  string
	err  error
}

// Dir builds the binaries on first use and returns their directory; a build failure
// fails t.
func (b *BinSet) Dir(t testing.TB) string {
	t.Helper()
	b.once.Do(func() { b.dir, b.err = b.build() })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.dir
}

// Remove deletes the directory, if it was made.
func (b *BinSet) Remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

func (b *BinSet) build() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", b.Prefix)
	if err != nil {
		return "", fmt.Errorf("making the binaries directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return dir, fmt.Errorf("making the binaries directory searchable: %w", err)
	}
	for _, bin := range b.Bins {
		args := []string{"build", "-o", filepath.Join(dir, bin.Out)}
		env := os.Environ()
		if bin.Out != "paddock" {
			args = append(args, GuestBuildFlags...)
			env = append(env, "CGO_ENABLED=0")
		}
		cmd := exec.Command("go", append(args, bin.Pkg)...)
		cmd.Dir, cmd.Env = root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			return dir, fmt.Errorf("building %s (`make setup` installs libvirt-dev for the cgo build): %v\n%s", bin.Pkg, err, out)
		}
	}
	return dir, nil
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root (go env GOMOD): %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("finding the module root: not inside a Go module")
	}
	return filepath.Dir(mod), nil
}
