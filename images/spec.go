package images

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/images/kmod"
)

// ErrInvalid is wrapped by every error about a bad Spec (a missing kernel, an unknown
// module, a dynamically linked agent, a handler that is not executable, …).
var ErrInvalid = errors.New("invalid image spec")

// ErrNotFound is wrapped when an image reference matches nothing in the store.
var ErrNotFound = errors.New("image not found")

// Spec says what goes into an image.
type Spec struct {
	// Kernel is the kernel image (bzImage). Empty: the newest /boot/vmlinuz-*.
	Kernel string `json:"kernel,omitempty"`
	// KernelVersion names /lib/modules/<version>. Empty: taken from the file name
	// (vmlinuz-<version>) or else from the bzImage header.
	KernelVersion string `json:"kernel_version,omitempty"`
	// ModulesDir is the kernel's module tree. Empty: /lib/modules/<KernelVersion>.
	ModulesDir string `json:"modules_dir,omitempty"`
	// Modules are loaded in addition to kmod.DefaultGuestModules (virtio_pci,
	// virtio_console, virtio_blk, button, evdev, 9pnet_virtio, 9p); dependencies are added from modules.dep.
	Modules []string `json:"modules,omitempty"`
	// Agent is the paddock-agent binary; it must be a static ELF executable (build it
	// with CGO_ENABLED=0). It becomes /init.
	Agent string `json:"agent"`
	// AgentVersion overrides the version read from the agent's Go build info.
	AgentVersion string `json:"agent_version,omitempty"`
	// Handlers are task handler binaries, installed as /usr/lib/paddock/handlers/<name>.
	Handlers []Handler `json:"handlers,omitempty"`
	// AgentConfig is the agent's configuration (agent.Config as JSON), written to
	// /etc/paddock/agent.json. Empty: the agent's defaults.
	AgentConfig json.RawMessage `json:"agent_config,omitempty"`
}

// Handler is one task handler binary.
type Handler struct {
	// Name names the handler (its file in the guest): lower-case letters, digits, '.',
	// '_' or '-'. The task types it serves are not named here: the build asks the
	// handler itself (Describe) and records them in the manifest.
	Name string `json:"name"`
	// Path is a static ELF executable on this machine.
	Path string `json:"path"`
	// Version is recorded in the manifest; empty: read from the binary's Go build info
	// (nothing is executed), else left empty.
	Version string `json:"version,omitempty"`
}

// Guest paths of what an image holds.
const (
	GuestInit        = "/init"
	GuestHandlersDir = "/usr/lib/paddock/handlers"
)

var handlerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// kernelFor fills in the kernel path, version and modules dir of spec.
func kernelFor(spec Spec) (path, version, modDir string, err error) {
	path, version = spec.Kernel, spec.KernelVersion
	if path == "" {
		p, v, err := kmod.NewestKernel("/boot")
		if err != nil {
			return "", "", "", fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		path = p
		if version == "" {
			version = v
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", "", invalid("kernel %s: %v; point the spec's kernel (--kernel) at a bzImage such as /boot/vmlinuz-$(uname -r), or leave it empty for the newest in /boot", path, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return "", "", "", invalid("kernel %s is not a regular file", path)
	}
	if version == "" {
		if b := filepath.Base(path); strings.HasPrefix(b, "vmlinuz-") {
			version = strings.TrimPrefix(b, "vmlinuz-")
		} else if version, err = bzImageVersion(path); err != nil {
			return "", "", "", invalid("kernel %s: cannot tell its version (%v); set kernel_version (--kernel-version)", path, err)
		}
	}
	modDir = spec.ModulesDir
	if modDir == "" {
		modDir = filepath.Join("/lib/modules", version)
	}
	if _, err := os.Stat(filepath.Join(modDir, "modules.dep")); err != nil {
		return "", "", "", invalid("kernel %s (version %s): no %s: install the kernel's modules (Debian: linux-image-%s) or set modules_dir", path, version, filepath.Join(modDir, "modules.dep"), version)
	}
	return path, version, modDir, nil
}

// bzImageVersion reads the version string a bzImage carries in its setup header.
func bzImageVersion(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return "", fmt.Errorf("reading the setup header: %w", err)
	}
	if string(hdr[0x202:0x206]) != "HdrS" {
		return "", errors.New("not a bzImage (no HdrS signature)")
	}
	off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, off)
	s := string(buf[:n])
	if i := strings.IndexAny(s, " \x00"); i > 0 {
		return s[:i], nil
	}
	return "", errors.New("no version string in the setup header")
}

// checkStatic refuses a file that is not a static ELF executable for the guest.
func checkStatic(what, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return invalid("%s %s: %v", what, path, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return invalid("%s %s is not a regular file", what, path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return invalid("%s %s is not executable (mode %v): chmod +x it", what, path, fi.Mode().Perm())
	}
	f, err := elf.Open(path)
	if err != nil {
		return invalid("%s %s is not an ELF executable (%v): the guest runs Linux binaries only", what, path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return invalid("%s %s is an ELF %v, not an executable", what, path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(p.Open())
			return invalid("%s %s is dynamically linked (interpreter %s) and the guest has no libc: build it static, for Go: CGO_ENABLED=0 go build", what, path, strings.TrimRight(string(interp), "\x00"))
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return invalid("%s %s is dynamically linked (needs %s) and the guest has no libc: build it static, for Go: CGO_ENABLED=0 go build", what, path, strings.Join(libs, ", "))
	}
	if f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_AARCH64 {
		return invalid("%s %s is built for %v, not a supported guest architecture", what, path, f.Machine)
	}
	return nil
}

// goVersion returns the version a Go binary carries, without running it: the
// buildinfo.Version set with -ldflags -X, else the module version, else the VCS
// revision, else "devel" for a Go binary built from a work tree without VCS
// stamping. "" for a binary with no Go build info.
func goVersion(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "-ldflags":
			const key = "buildinfo.Version="
			if i := strings.Index(s.Value, key); i >= 0 {
				v := s.Value[i+len(key):]
				if j := strings.IndexAny(v, " '\""); j >= 0 {
					v = v[:j]
				}
				if v != "" {
					return v
				}
			}
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	if len(rev) >= 12 {
		return rev[:12] + modified
	}
	if bi.Main.Version == "(devel)" {
		return "devel"
	}
	return ""
}

// checkSpec validates what can be checked without reading file contents.
func checkSpec(spec Spec) error {
	if spec.Agent == "" {
		return invalid("no agent binary: set agent (--agent) to a static paddock-agent (CGO_ENABLED=0 go build ./cmd/paddock-agent)")
	}
	if err := checkStatic("agent", spec.Agent); err != nil {
		return err
	}
	seen := map[string]bool{}
	for i, h := range spec.Handlers {
		if !handlerNameRE.MatchString(h.Name) {
			return invalid("handlers[%d] (%s): name %q: use lower-case letters, digits, '.', '_' or '-'", i, h.Path, h.Name)
		}
		if seen[h.Name] {
			return invalid("handlers[%d]: name %q is used twice", i, h.Name)
		}
		seen[h.Name] = true
		if err := checkStatic(fmt.Sprintf("handler %q:", h.Name), h.Path); err != nil {
			return err
		}
	}
	if len(bytes.TrimSpace(spec.AgentConfig)) > 0 {
		if _, err := agent.ParseConfig(spec.AgentConfig); err != nil {
			return invalid("agent config: %v", err)
		}
	}
	return nil
}
