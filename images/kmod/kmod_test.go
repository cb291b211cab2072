package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/internal/testutil"
)

func writeTree(t *testing.T, dep, builtin string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if builtin != "" {
		if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func names(ms []Module) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, ",")
}

func TestResolveOrder(t *testing.T) {
	dep := `kernel/d/virtio_pci.ko: kernel/d/virtio_pci_legacy_dev.ko kernel/d/virtio_pci_modern_dev.ko kernel/d/virtio.ko kernel/d/virtio_ring.ko
kernel/d/virtio_pci_legacy_dev.ko:
kernel/d/virtio_pci_modern_dev.ko:
kernel/d/virtio.ko: kernel/d/virtio_ring.ko
kernel/d/virtio_ring.ko:
kernel/c/virtio_console.ko: kernel/d/virtio.ko kernel/d/virtio_ring.ko
kernel/x/a-b.ko.xz: kernel/x/c.ko.xz
kernel/x/c.ko.xz:
kernel/x/cyc1.ko: kernel/x/cyc2.ko
kernel/x/cyc2.ko: kernel/x/cyc1.ko
`
	root := writeTree(t, dep, "kernel/fs/ext4/ext4.ko\n")
	tests := []struct {
		name    string
		in      []string
		want    string
		wantErr string
	}{
		{"transport and console", []string{"virtio_pci", "virtio_console"}, "virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio_pci,virtio_console", ""},
		{"dedup", []string{"virtio_console", "virtio", "virtio_console"}, "virtio_ring,virtio,virtio_console", ""},
		{"dash and compressed", []string{"a-b"}, "c,a_b", ""},
		{"builtin skipped", []string{"ext4", "virtio_ring"}, "virtio_ring", ""},
		{"missing", []string{"nosuchmod"}, "", `module "nosuchmod"`},
		{"cycle", []string{"cyc1"}, "", "cycle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(root, tc.in...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve(%v) error = %v, want containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%v): %v", tc.in, err)
			}
			if names(got) != tc.want {
				t.Fatalf("Resolve(%v) = %s, want %s", tc.in, names(got), tc.want)
			}
		})
	}
	_, err := Resolve(root, "nosuchmod")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing module error %v does not wrap ErrNotFound", err)
	}
	if _, err := Resolve(t.TempDir(), "x"); err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Fatalf("missing modules.dep error = %v, want one naming modules.dep", err)
	}
}

// TestResolveInstalledKernel checks the resolved order for the guest's default modules
// on the installed kernel against modules.dep itself: every module comes after each of
// its dependencies, and every dependency is present.
func TestResolveInstalledKernel(t *testing.T) {
	_, kver := testutil.RequireKernel(t)
	root := filepath.Join("/lib/modules", kver)
	ix, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ix.Resolve(DefaultGuestModules...)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		if _, err := os.Stat(m.Path); err != nil {
			t.Errorf("module %s: file %s: %v", m.Name, m.Path, err)
		}
		pos[m.Name] = i
	}
	for _, want := range []string{"virtio_ring", "virtio", "virtio_pci", "virtio_console", "virtio_blk", "9pnet", "9pnet_virtio", "9p"} {
		if _, ok := pos[want]; !ok && !ix.Builtin(want) {
			t.Errorf("resolved %s lacks %s", names(mods), want)
		}
	}
	for _, m := range mods {
		for _, d := range ix.Deps(m.Name) {
			if ix.Builtin(d) {
				continue
			}
			p, ok := pos[d]
			if !ok {
				t.Errorf("%s depends on %s, which is not in %s", m.Name, d, names(mods))
			} else if p > pos[m.Name] {
				t.Errorf("%s loads before its dependency %s: %s", m.Name, d, names(mods))
			}
		}
	}
	t.Logf("load order on %s: %s", kver, names(mods))
}

func TestNewestKernel(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"vmlinuz-6.9.0-1-amd64", "vmlinuz-6.10.0-1-amd64", "vmlinuz-6.1.0-56-amd64"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, v, err := NewestKernel(dir)
	if err != nil || v != "6.10.0-1-amd64" || p != filepath.Join(dir, "vmlinuz-6.10.0-1-amd64") {
		t.Fatalf("NewestKernel = %q, %q, %v; want 6.10.0-1-amd64", p, v, err)
	}
	if _, _, err := NewestKernel(t.TempDir()); err == nil || !strings.Contains(err.Error(), "linux-image") {
		t.Fatalf("empty boot dir error = %v, want one saying how to install a kernel", err)
	}
}
