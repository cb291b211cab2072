package images

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/zstd"
)

// testAgentVersion is stamped into the test's agent with -ldflags -X.
const testAgentVersion = "v0.0.0-imagestest"

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
	sharedDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// agentBinary builds the real paddock-agent (CGO_ENABLED=0) once per test run.
func agentBinary(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		sharedDir, agentErr = os.MkdirTemp("", "paddock-images-test-")
		if agentErr != nil {
			return
		}
		agentPath = filepath.Join(sharedDir, "paddock-agent")
		cmd := exec.Command("go", "build", "-ldflags", "-X github.com/paddockvm/paddock/internal/buildinfo.Version="+testAgentVersion, "-o", agentPath, "github.com/paddockvm/paddock/cmd/paddock-agent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = err
			agentPath = string(out)
		}
	})
	if agentErr != nil {
		t.Fatalf("building paddock-agent: %v: %s", agentErr, agentPath)
	}
	return agentPath
}

var (
	binMu sync.Mutex
	bins  = map[string]string{} // "pkg ldflags" → built binary
)

// goBinary builds the Go package pkg (an import path) static (CGO_ENABLED=0) with the
// given -ldflags, once per test run, and returns the binary's path.
func goBinary(t testing.TB, pkg, ldflags string) string {
	t.Helper()
	agentBinary(t) // makes sharedDir
	binMu.Lock()
	defer binMu.Unlock()
	key := pkg + " " + ldflags
	if p, ok := bins[key]; ok {
		return p
	}
	out := filepath.Join(sharedDir, fmt.Sprintf("bin%d-%s", len(bins), filepath.Base(pkg)))
	cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v: %s", pkg, err, b)
	}
	bins[key] = out
	return out
}

// tinyHandler builds images/testdata/typeshandler serving the comma-separated types
// (default tiny.one,tiny.two when empty).
func tinyHandler(t testing.TB, types string) string {
	flags := ""
	if types != "" {
		flags = "-X main.typeList=" + types
	}
	return goBinary(t, "github.com/paddockvm/paddock/images/testdata/typeshandler", flags)
}

// copyWith copies src to a new file in dir with extra bytes appended (still a valid
// ELF: nothing reads past the sections) and mode perm.
func copyWith(t testing.TB, src, dst string, extra []byte, perm os.FileMode) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, append(b, extra...), perm); err != nil {
		t.Fatal(err)
	}
	return dst
}

// fakeKernel writes a synthetic kernel and module tree: a fake vmlinuz-9.9.9-test and
// a modules.dep with the virtio modules (one gzip- and one zstd-compressed) and a
// modules.builtin with button, evdev, the 9p modules, virtio_balloon and virtio-rng, so unit tests need neither /boot nor
// /lib/modules. It returns the kernel and modules dir.
func fakeKernel(t testing.TB) (kernel, modDir string) {
	t.Helper()
	dir := t.TempDir()
	kernel = filepath.Join(dir, "vmlinuz-9.9.9-test")
	if err := os.WriteFile(kernel, bytes.Repeat([]byte("kernel!"), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	modDir = filepath.Join(dir, "modules")
	files := map[string][]byte{
		"kernel/drivers/virtio/virtio_ring.ko":           []byte("ring"),
		"kernel/drivers/virtio/virtio.ko":                []byte("virtio"),
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko": []byte("modern"),
		"kernel/drivers/virtio/virtio_pci_legacy_dev.ko": []byte("legacy"),
		"kernel/drivers/virtio/virtio_pci.ko":            []byte("pci"),
		"kernel/drivers/char/virtio_console.ko.gz":       gz(t, []byte("console-plain")),
		"kernel/drivers/block/virtio_blk.ko.zst":         zst(t, []byte("blk-plain")),
		"kernel/fs/extra.ko.xz":                          xz(t, []byte("extra-plain")),
	}
	for rel, data := range files {
		p := filepath.Join(modDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dep := `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko.gz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko.zst: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/extra.ko.xz:
`
	if err := os.WriteFile(filepath.Join(modDir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	// erofs (the handler disk) and the power-button, 9p, balloon and RNG modules of kmod.DefaultGuestModules are built into this kernel.
	builtin := "kernel/crypto/crc32c_generic.ko\nkernel/fs/erofs/erofs.ko\nkernel/drivers/acpi/button.ko\nkernel/drivers/input/evdev.ko\nkernel/net/9p/9pnet_virtio.ko\nkernel/fs/9p/9p.ko\nkernel/drivers/virtio/virtio_balloon.ko\nkernel/drivers/char/hw_random/virtio-rng.ko\n"
	if err := os.WriteFile(filepath.Join(modDir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
		t.Fatal(err)
	}
	return kernel, modDir
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zst(t testing.TB, b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return w.EncodeAll(b, nil)
}

// xz compresses with the xz command (xz-utils), as Debian-style kernels ship modules.
func xz(t testing.TB, b []byte) []byte {
	cmd := exec.Command("xz", "-c")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz (install xz-utils): %v", err)
	}
	return out
}

type cpioEntry struct {
	hdr  cpio.Header
	data []byte
}

// readInitramfs decompresses and parses an image's initramfs, in archive order.
func readInitramfs(t testing.TB, path string) []cpioEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("initramfs %s is not gzip: %v", path, err)
	}
	r := cpio.NewReader(zr)
	var out []cpioEntry
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading cpio %s: %v", path, err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cpioEntry{*h, data})
	}
}
