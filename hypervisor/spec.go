package hypervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DomainSpec describes one guest: a direct kernel boot with virtio disks, virtio-9p
// shared directories and virtio-serial channels, a serial console logged to a file, and
// no network interface unless Network is set.
type DomainSpec struct {
	// Name must start with the configured prefix (default "paddock-"); the rest is
	// letters, digits, '.', '_' or '-'.
	Name      string
	VCPUs     int
	MemoryMiB int
	// Kernel and Initrd are absolute paths of files readable by the QEMU process.
	Kernel  string
	Initrd  string
	Cmdline string
	Disks   []Disk
	// Filesystems are host directories shared into the guest over virtio-9p (the data
	// plane's bulk channel: docs/dataplane.md).
	Filesystems []Filesystem
	// Channels are virtio-serial ports, each exposed on the host as a unix socket that
	// libvirt creates (mode bind); the host side connects to it as a client.
	Channels []Channel
	// ConsoleLog, when set, is the file the serial console (ttyS0) is logged to. The
	// console is also a pty (virsh console).
	ConsoleLog string
	// Network nil means no network interface at all.
	Network *Network
	// TBCacheMiB is the size of QEMU's TCG translation-block cache in MiB (libvirt
	// <features><tcg><tb-cache>), where guests run under TCG; 0 leaves QEMU's default
	// (1 GiB for system emulation, touched as code is translated, so an idle guest's
	// host RSS grows towards it). Ignored under KVM, which translates nothing.
	TBCacheMiB int
	// CPUShares is the guest's relative CPU weight against the host's other guests
	// (libvirt <cputune><shares>; cgroup cpu.shares, or cpu.weight under cgroup v2):
	// a guest with twice the shares gets twice the CPU time when they compete. 0 leaves
	// libvirt's default (1024). vmpool gives online pools' guests more than batch ones.
	CPUShares int
	// Labels are stored in the domain's metadata and returned by Lookup and List (e.g.
	// the pool a guest belongs to).
	Labels map[string]string
}

// Disk is a virtio-blk disk backed by a file.
type Disk struct {
	Path     string // absolute path of an existing file
	Format   string // "qcow2" or "raw"
	Target   string // "vda", "vdb", …
	ReadOnly bool
	// Shareable tells libvirt that other domains attach the same file at the same
	// time (<shareable/>); only with ReadOnly (a read-only image shared by every guest
	// of an image, such as images' handler disk).
	Shareable bool
	// Serial is the virtio-blk serial the guest reads in /sys/block/<dev>/serial, to
	// find the disk without relying on device order: at most 20 letters, digits, '-',
	// '_' or '.'; "" for none.
	Serial string
}

// Filesystem is a host directory exported into the guest over virtio-9p (libvirt
// <filesystem type="mount" accessmode="squash">). QEMU opens its files as its own user
// (libvirt-qemu on Debian) and ignores the guest's ownership changes, so the directory
// and everything above it must be reachable by that user, and a writable share must be
// writable by it: docs/dataplane.md gives the recipe. libvirt does not change the
// directory's owner or mode.
//
// In the guest: mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 <Tag> <dir>.
type Filesystem struct {
	// Source is the host directory: an absolute, clean path of an existing directory.
	Source string
	// Tag is the mount tag the guest sees (/sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag)
	// and mounts by: 1-31 letters, digits, '.', '_' or '-', starting with a letter or
	// digit, unique within the domain.
	Tag string
	// ReadOnly makes QEMU refuse every write through the share.
	ReadOnly bool
}

// Channel is a virtio-serial port.
type Channel struct {
	// Name is the port name the guest sees in /sys/class/virtio-ports/*/name, e.g.
	// "org.paddock.agent.0".
	Name string
	// SocketPath is the absolute path of the unix socket libvirt creates on the host; its
	// directory must exist and be reachable by QEMU. At most 107 bytes (sun_path).
	SocketPath string
}

// Network attaches one virtio network interface. Set exactly one of Network or Bridge.
type Network struct {
	Network string // a libvirt network, e.g. "default"
	Bridge  string // a host bridge, e.g. "br0"
	MAC     string // optional, e.g. "52:54:00:12:34:56"
}

// Limits enforced by Validate.
const (
	MaxNameLen    = 64
	MaxVCPUs      = 256
	MaxSocketLen  = 107 // sun_path is 108 bytes including the NUL
	MaxTagLen     = 31  // QEMU refuses longer virtio-9p mount tags
	MaxTBCacheMiB = 4096
	// MinCPUShares and MaxCPUShares bound CPUShares (the kernel's cpu.shares range).
	MinCPUShares = 2
	MaxCPUShares = 262144
)

var (
	nameRE      = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	targetRE    = regexp.MustCompile(`^vd[a-z]{1,2}$`)
	channelRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	labelKeyRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,62})$`)
	macRE       = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
	ifaceNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// CheckName refuses a name without the prefix (or otherwise unusable) with a *FieldError
// for field "name". Every operation calls it before touching the hypervisor.
func CheckName(prefix, name string) error {
	if !strings.HasPrefix(name, prefix) || len(name) == len(prefix) {
		return fieldErr("name", fmt.Sprintf("name domains %s<something>; Paddock only touches domains whose names carry the prefix %q (hypervisor.prefix)", prefix, prefix),
			"%q does not start with the prefix %q", name, prefix)
	}
	if len(name) > MaxNameLen || !nameRE.MatchString(name) {
		return fieldErr("name", fmt.Sprintf("use at most %d letters, digits, '.', '_' or '-'", MaxNameLen), "%q is not a usable domain name", name)
	}
	return nil
}

// Validate checks the spec before libvirt is called: the name carries prefix, sizes are
// sane, the kernel, initrd and disk files exist, channels and disk targets are well
// formed and unique. Errors are *FieldError naming the field and the fix.
func (s DomainSpec) Validate(prefix string) error {
	if err := CheckName(prefix, s.Name); err != nil {
		return err
	}
	if s.VCPUs < 1 || s.VCPUs > MaxVCPUs {
		return fieldErr("vcpus", fmt.Sprintf("set VCPUs between 1 and %d, e.g. 1", MaxVCPUs), "%d is out of range", s.VCPUs)
	}
	if s.MemoryMiB <= 0 {
		return fieldErr("memory", "set MemoryMiB to a positive size in MiB, e.g. 256", "%d MiB is not a size", s.MemoryMiB)
	}
	if s.MemoryMiB < 32 {
		return fieldErr("memory", "give the guest at least 32 MiB, e.g. 256", "%d MiB is too small to boot a kernel", s.MemoryMiB)
	}
	if s.TBCacheMiB < 0 || s.TBCacheMiB > MaxTBCacheMiB {
		return fieldErr("tb_cache_mib", fmt.Sprintf("use 0 (QEMU's default) or 1 to %d MiB, e.g. 16", MaxTBCacheMiB), "%d MiB is out of range", s.TBCacheMiB)
	}
	if s.CPUShares != 0 && (s.CPUShares < MinCPUShares || s.CPUShares > MaxCPUShares) {
		return fieldErr("cpu_shares", fmt.Sprintf("use 0 (libvirt's default, 1024) or %d to %d, e.g. 4096 for a guest that should get 4 times a default one's CPU", MinCPUShares, MaxCPUShares), "%d is out of range", s.CPUShares)
	}
	if err := checkFile("kernel", s.Kernel, "point Kernel at a kernel image, e.g. /boot/vmlinuz-$(uname -r)"); err != nil {
		return err
	}
	if err := checkFile("initrd", s.Initrd, "point Initrd at an initramfs (images builds one)"); err != nil {
		return err
	}
	targets := map[string]int{}
	for i, d := range s.Disks {
		f := fmt.Sprintf("disks[%d]", i)
		if err := checkFile(f+".path", d.Path, "point the disk at an existing image file"); err != nil {
			return err
		}
		if d.Format != "qcow2" && d.Format != "raw" {
			return fieldErr(f+".format", `use "qcow2" or "raw"`, "%q is not a supported format", d.Format)
		}
		if !targetRE.MatchString(d.Target) {
			return fieldErr(f+".target", `use a virtio target such as "vda", "vdb"`, "%q is not a virtio disk target", d.Target)
		}
		if d.Shareable && !d.ReadOnly {
			return fieldErr(f+".shareable", "make the shared disk read-only, or give each guest its own copy", "a shareable disk must be read-only")
		}
		if d.Serial != "" && !serialRE.MatchString(d.Serial) {
			return fieldErr(f+".serial", "use at most 20 letters, digits, '-', '_' or '.'", "%q is not a valid virtio-blk serial", d.Serial)
		}
		if j, dup := targets[d.Target]; dup {
			return fieldErr(f+".target", "give each disk its own target (vda, vdb, …)", "%q is already used by disks[%d]", d.Target, j)
		}
		targets[d.Target] = i
	}
	if err := checkFilesystems(s.Filesystems); err != nil {
		return err
	}
	names, sockets := map[string]int{}, map[string]int{}
	for i, c := range s.Channels {
		f := fmt.Sprintf("channels[%d]", i)
		if len(c.Name) > 64 || !channelRE.MatchString(c.Name) {
			return fieldErr(f+".name", `use letters, digits, '.', '_' or '-', e.g. "org.paddock.agent.0"`, "%q is not a virtio-serial port name", c.Name)
		}
		if j, dup := names[c.Name]; dup {
			return fieldErr(f+".name", "give each channel its own name", "%q is already used by channels[%d]", c.Name, j)
		}
		names[c.Name] = i
		if !filepath.IsAbs(c.SocketPath) || filepath.Clean(c.SocketPath) != c.SocketPath {
			return fieldErr(f+".socket_path", "use a clean absolute path, e.g. /run/paddock/vms/<name>/agent.sock", "%q is not a clean absolute path", c.SocketPath)
		}
		if len(c.SocketPath) > MaxSocketLen {
			return fieldErr(f+".socket_path", fmt.Sprintf("use a shorter directory: unix socket paths are limited to %d bytes", MaxSocketLen), "%q is %d bytes long", c.SocketPath, len(c.SocketPath))
		}
		if j, dup := sockets[c.SocketPath]; dup {
			return fieldErr(f+".socket_path", "give each channel its own socket", "%q is already used by channels[%d]", c.SocketPath, j)
		}
		sockets[c.SocketPath] = i
		if err := checkDir(f+".socket_path", filepath.Dir(c.SocketPath)); err != nil {
			return err
		}
	}
	if s.ConsoleLog != "" {
		if !filepath.IsAbs(s.ConsoleLog) {
			return fieldErr("console_log", "use an absolute path", "%q is not absolute", s.ConsoleLog)
		}
		if err := checkDir("console_log", filepath.Dir(s.ConsoleLog)); err != nil {
			return err
		}
	}
	if n := s.Network; n != nil {
		if (n.Network == "") == (n.Bridge == "") {
			return fieldErr("network", "set exactly one of Network (a libvirt network such as \"default\") or Bridge, or leave Network nil for no interface", "network=%q bridge=%q", n.Network, n.Bridge)
		}
		if v := n.Network + n.Bridge; !ifaceNameRE.MatchString(v) {
			return fieldErr("network", "use the plain name of a libvirt network or host bridge", "%q is not a network or bridge name", v)
		}
		if n.MAC != "" && !macRE.MatchString(n.MAC) {
			return fieldErr("network.mac", "use the form 52:54:00:xx:xx:xx or leave it empty", "%q is not a MAC address", n.MAC)
		}
	}
	for _, k := range sortedKeys(s.Labels) {
		if !labelKeyRE.MatchString(k) {
			return fieldErr("labels", "use lower-case keys of letters, digits, '.', '_', '/' or '-' (at most 63)", "key %q is not allowed", k)
		}
		if len(s.Labels[k]) > 256 {
			return fieldErr("labels", "keep label values under 256 bytes", "value of %q is %d bytes", k, len(s.Labels[k]))
		}
	}
	return nil
}

// serialRE is what a virtio-blk serial may be: virtio-blk carries 20 bytes.
var serialRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,20}$`)

func checkFilesystems(fss []Filesystem) error {
	tags := map[string]int{}
	for i, fs := range fss {
		f := fmt.Sprintf("filesystems[%d]", i)
		if !filepath.IsAbs(fs.Source) || filepath.Clean(fs.Source) != fs.Source {
			return fieldErr(f+".source", "use a clean absolute path of a host directory, e.g. /var/lib/paddock/vms/<name>/in", "%q is not a clean absolute path", fs.Source)
		}
		fi, err := os.Stat(fs.Source)
		if err != nil {
			return fieldErr(f+".source", "create the directory first, reachable (mode 0755 above it) by the QEMU user", "directory %s: %v", fs.Source, err)
		}
		if !fi.IsDir() {
			return fieldErr(f+".source", "share a directory, not a file", "%s is not a directory", fs.Source)
		}
		if len(fs.Tag) > MaxTagLen || !tagRE.MatchString(fs.Tag) {
			return fieldErr(f+".tag", fmt.Sprintf("use 1-%d letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. %q", MaxTagLen, "paddock.in"), "%q is not a usable mount tag", fs.Tag)
		}
		if j, dup := tags[fs.Tag]; dup {
			return fieldErr(f+".tag", "give each filesystem its own tag", "%q is already used by filesystems[%d]", fs.Tag, j)
		}
		tags[fs.Tag] = i
	}
	return nil
}

func checkFile(field, path, fix string) error {
	if path == "" {
		return fieldErr(field, fix, "empty")
	}
	if !filepath.IsAbs(path) {
		return fieldErr(field, "use an absolute path", "%q is not absolute", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fieldErr(field, fix, "file %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fieldErr(field, fix, "%s is not a regular file", path)
	}
	return nil
}

func checkDir(field, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fieldErr(field, "create the directory first (QEMU must be able to reach it)", "directory %s: %v", dir, err)
	}
	if !fi.IsDir() {
		return fieldErr(field, "use a path inside a directory", "%s is not a directory", dir)
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
