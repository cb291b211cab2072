package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNotFound is returned (wrapped) when a module is neither in modules.dep nor built in.
var ErrNotFound = errors.New("kernel module not found")

// Module is one loadable kernel module.
type Module struct {
	// Name is the canonical module name (underscores, no extension), e.g. "virtio_pci".
	Name string `json:"name"`
	// RelPath is the module file relative to the modules root, e.g.
	// "kernel/drivers/virtio/virtio_pci.ko" (may end in .ko.xz, .ko.zst or .ko.gz).
	RelPath string `json:"path"`
	// Path is the module file on this machine (modules root joined with RelPath).
	Path string `json:"-"`
}

// Index is a parsed modules.dep (and modules.builtin) of one kernel.
type Index struct {
	root    string
	deps    map[string][]string // module name → dependency names, in modules.dep order
	paths   map[string]string   // module name → relative path
	builtin map[string]bool
}

// Canonical returns the module name for a name or file path: the base name without the
// .ko[.xz|.zst|.gz] suffix, with '-' turned into '_' (the kernel treats them alike).
func Canonical(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// Load reads modRoot/modules.dep and, when present, modRoot/modules.builtin.
// modRoot is a kernel's module directory, e.g. /lib/modules/6.1.0-56-amd64.
func Load(modRoot string) (*Index, error) {
	depFile := filepath.Join(modRoot, "modules.dep")
	f, err := os.Open(depFile)
	if err != nil {
		return nil, fmt.Errorf("reading module dependencies %s: %w (is the kernel's modules package installed?)", depFile, err)
	}
	defer f.Close()
	ix := &Index{root: modRoot, deps: map[string][]string{}, paths: map[string]string{}, builtin: map[string]bool{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("parsing %s line %d: no ':' in %q", depFile, line, text)
		}
		name := Canonical(mod)
		ix.paths[name] = mod
		var deps []string
		for _, d := range strings.Fields(rest) {
			deps = append(deps, Canonical(d))
			if _, seen := ix.paths[Canonical(d)]; !seen {
				ix.paths[Canonical(d)] = d
			}
		}
		ix.deps[name] = deps
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", depFile, err)
	}
	if b, err := os.ReadFile(filepath.Join(modRoot, "modules.builtin")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				ix.builtin[Canonical(l)] = true
			}
		}
	}
	return ix, nil
}

// Builtin reports whether name is compiled into the kernel (nothing to load).
func (ix *Index) Builtin(name string) bool { return ix.builtin[Canonical(name)] }

// Deps returns the direct dependencies of name as listed in modules.dep.
func (ix *Index) Deps(name string) []string {
	return append([]string(nil), ix.deps[Canonical(name)]...)
}

// Resolve returns the modules named, with every dependency, in load order: each module
// after all of its dependencies, each module once. Built-in modules are left out. A name
// that is neither a module nor built in is an error wrapping ErrNotFound that names it
// and the modules.dep file searched.
func (ix *Index) Resolve(names ...string) ([]Module, error) {
	var out []Module
	state := map[string]int{} // 0 unvisited, 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " → "))
		}
		rel, ok := ix.paths[name]
		if !ok {
			if ix.builtin[name] {
				state[name] = 2
				return nil
			}
			return fmt.Errorf("module %q for kernel %s: %w in %s", name, filepath.Base(ix.root), ErrNotFound, filepath.Join(ix.root, "modules.dep"))
		}
		state[name] = 1
		// modprobe loads the dependencies listed last first: walk them in reverse.
		deps := ix.deps[name]
		for i := len(deps) - 1; i >= 0; i-- {
			if err := visit(deps[i], append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, RelPath: rel, Path: filepath.Join(ix.root, rel)})
		return nil
	}
	for _, n := range names {
		if err := visit(Canonical(n), nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Resolve loads modRoot/modules.dep and resolves names in load order (see Index.Resolve).
func Resolve(modRoot string, names ...string) ([]Module, error) {
	ix, err := Load(modRoot)
	if err != nil {
		return nil, err
	}
	return ix.Resolve(names...)
}

// DefaultGuestModules are the modules every Paddock guest loads: the virtio PCI
// transport (not a modules.dep dependency of the drivers: it must be named), the
// virtio-serial console driver, the virtio block driver, the ACPI button driver plus
// evdev, through which the guest's PID 1 sees the host's ACPI power button (libvirt's
// graceful shutdown) as KEY_POWER on /dev/input/eventN, and virtio-9p (9pnet_virtio and
// the 9p filesystem, which pull in 9pnet, netfs and fscache), the data plane's shared
// directories (docs/dataplane.md), and virtio_balloon, whose free page reporting hands
// the pages a guest frees back to the host (hypervisor's memballoon), and virtio_rng,
// which seeds the guest kernel's CRNG from the host at boot (hypervisor's rng device;
// without it the first getrandom(2) in a fresh TCG guest waits seconds). (Debian's
// kernel builds all of these as modules; where one is built in, kmod skips it.)
var DefaultGuestModules = []string{"virtio_pci", "virtio_console", "virtio_blk", "button", "evdev", "9pnet_virtio", "9p", "virtio_balloon", "virtio_rng"}

// NewestKernel returns the newest bootDir/vmlinuz-* (by version order) and its version,
// the file name after "vmlinuz-". bootDir is usually /boot.
func NewestKernel(bootDir string) (path, version string, err error) {
	matches, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return "", "", fmt.Errorf("listing kernels in %s: %w", bootDir, err)
	}
	if len(matches) == 0 {
		return "", "", fmt.Errorf("no kernel (vmlinuz-*) in %s: install one (Debian: apt-get install linux-image-amd64) or set the kernel path explicitly", bootDir)
	}
	sort.Slice(matches, func(i, j int) bool {
		return versionLess(filepath.Base(matches[i]), filepath.Base(matches[j]))
	})
	path = matches[len(matches)-1]
	return path, strings.TrimPrefix(filepath.Base(path), "vmlinuz-"), nil
}

// versionLess compares strings by runs of digits numerically and the rest bytewise, so
// that vmlinuz-6.10.0 sorts after vmlinuz-6.9.0.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		da, ra := leadingDigits(a)
		db, rb := leadingDigits(b)
		if da != "" && db != "" {
			if len(da) != len(db) {
				return len(da) < len(db)
			}
			if da != db {
				return da < db
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	d := strings.TrimLeft(s[:i], "0")
	if i > 0 && d == "" {
		d = "0"
	}
	return d, s[i:]
}
