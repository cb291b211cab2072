package images

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/internal/testutil"
)

// canon is the module name of a modules.dep path, written out here rather than taken
// from kmod so the test checks kmod against modules.dep independently.
func canon(p string) string {
	b := filepath.Base(p)
	b = strings.SplitN(b, ".ko", 2)[0]
	return strings.ReplaceAll(b, "-", "_")
}

// TestModuleOrderInstalledKernel builds an image for the installed kernel (the default:
// newest /boot/vmlinuz-*) and checks the manifest's module list against that kernel's
// modules.dep, read here line by line: virtio_console and virtio_blk are there, every
// dependency of every listed module is listed, and before it.
func TestModuleOrderInstalledKernel(t *testing.T) {
	_, kver := testutil.RequireKernel(t)
	img, err := mustOpen(t).Build(context.Background(), Spec{Agent: agentBinary(t)})
	if err != nil {
		t.Fatal(err)
	}
	if img.Manifest.KernelVersion != kver {
		t.Fatalf("image kernel %s, newest installed %s", img.Manifest.KernelVersion, kver)
	}
	f, err := os.Open(filepath.Join("/lib/modules", kver, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		mod, rest, _ := strings.Cut(sc.Text(), ":")
		for _, d := range strings.Fields(rest) {
			deps[canon(mod)] = append(deps[canon(mod)], canon(d))
		}
	}
	pos := map[string]int{}
	var order []string
	for i, m := range img.Manifest.Modules {
		pos[m.Name] = i
		order = append(order, m.Name)
		if !strings.HasPrefix(m.Path, "/lib/modules/"+kver+"/") || !strings.HasSuffix(m.Path, ".ko") {
			t.Errorf("module %s at %s, want a plain .ko under /lib/modules/%s", m.Name, m.Path, kver)
		}
	}
	for _, want := range []string{"virtio_console", "virtio_blk", "virtio_pci"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("%s missing from %v", want, order)
		}
	}
	for _, m := range img.Manifest.Modules {
		for _, d := range deps[m.Name] {
			p, ok := pos[d]
			switch {
			case !ok:
				t.Errorf("%s needs %s (modules.dep), not in the image: %v", m.Name, d, order)
			case p > pos[m.Name]:
				t.Errorf("%s is loaded before its dependency %s: %v", m.Name, d, order)
			}
		}
	}
	t.Logf("modules for virtio_console/virtio_blk on %s: %v", kver, order)
}

func TestScratch(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		testutil.Skip(t, "qemu-img not found", "run `make setup` (installs qemu-utils)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := NewScratch(ctx, filepath.Join(dir, "disks"), base, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", s.Path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v: %s", err, out)
	}
	for _, want := range []string{"file format: qcow2", "backing file: " + base, "backing file format: raw", "virtual size: 8 MiB"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("overlay info lacks %q:\n%s", want, out)
		}
	}
	if s.SizeBytes != 8<<20 || s.BaseFormat != "raw" {
		t.Errorf("scratch = %+v", s)
	}
	if _, err := NewScratch(ctx, dir, base, 4); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "smaller than its base") {
		t.Errorf("4 MiB overlay on an 8 MiB base: %v", err)
	}
	if _, err := NewScratch(ctx, dir, filepath.Join(dir, "nope.raw"), 0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nope.raw") {
		t.Errorf("missing base: %v", err)
	}
	if err := s.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path); !os.IsNotExist(err) {
		t.Errorf("overlay still there: %v", err)
	}
	if err := s.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}
