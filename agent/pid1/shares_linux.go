//go:build linux

package pid1

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/api/guestabi"
)

// NinePOptions are the virtio-9p mount options of every share: 9P2000.L over virtio
// with the largest message size the 6.1 kernel's virtio transport allows (it silently
// cuts anything larger to 512000), and the default cache mode (none), which measured
// fastest in both directions under TCG (docs/dataplane.md, "Measurements").
const NinePOptions = "trans=virtio,version=9p2000.L,msize=512000"

// NineTagsGlob is where the kernel lists the tags of the virtio-9p devices it sees,
// relative to sysfs (one mount_tag file per device, the tag followed by a NUL).
const NineTagsGlob = "bus/virtio/drivers/9pnet_virtio/*/mount_tag"

// Share is a virtio-9p shared directory that PID 1 mounts when the host offers its tag.
type Share struct {
	Tag      string // the mount tag (hypervisor.Filesystem.Tag on the host)
	Target   string // the mount point in the guest
	ReadOnly bool
}

// DataShares are the data plane's shares (api/guestabi): the input share, read-only, at
// guestabi.InDir and the output share, writable, at guestabi.OutDir.
var DataShares = []Share{
	{Tag: guestabi.InTag, Target: guestabi.InDir, ReadOnly: true},
	{Tag: guestabi.OutTag, Target: guestabi.OutDir},
}

// OfferedTags returns the mount tags of the virtio-9p devices the guest has, sorted,
// read from sysDir/NineTagsGlob (sysDir is normally /sys). No device, or no
// 9pnet_virtio module loaded, is no tags and no error.
func OfferedTags(sysDir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(sysDir, NineTagsGlob))
	if err != nil {
		return nil, fmt.Errorf("listing virtio-9p mount tags: %w", err)
	}
	var tags []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading virtio-9p mount tag %s: %w", f, err)
		}
		if tag := strings.TrimRight(string(b), "\x00\n "); tag != "" {
			tags = append(tags, tag)
		}
	}
	sort.Strings(tags)
	return tags, nil
}

// MountArgs returns the mount(2) flags and data MountShares uses for s.
func MountArgs(s Share) (flags uintptr, data string) {
	flags = unix.MS_NOSUID | unix.MS_NODEV
	if s.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	return flags, NinePOptions
}

// MountShares mounts each share whose tag the guest is offered (OfferedTags) on its
// target, creating the mount point, and prints one line per mount on log. A share whose
// tag is not offered is left out without error: a guest started without shared
// directories just has none. It returns the shares it mounted. A target that is
// already a mount (EBUSY) counts as mounted. The first failure stops and names the
// share. Only the guest's PID 1 calls it.
func MountShares(sysDir string, shares []Share, log io.Writer) ([]Share, error) {
	return mountShares(sysDir, shares, log, unix.Mount)
}

type mountFunc func(source, target, fstype string, flags uintptr, data string) error

func mountShares(sysDir string, shares []Share, log io.Writer, mount mountFunc) ([]Share, error) {
	offered, err := OfferedTags(sysDir)
	if err != nil {
		return nil, err
	}
	var mounted []Share
	for _, s := range shares {
		if !contains(offered, s.Tag) {
			continue
		}
		if err := os.MkdirAll(s.Target, 0o755); err != nil {
			return mounted, fmt.Errorf("creating mount point %s for the 9p share %s: %w", s.Target, s.Tag, err)
		}
		flags, data := MountArgs(s)
		if err := mount(s.Tag, s.Target, "9p", flags, data); err != nil && !errors.Is(err, unix.EBUSY) {
			return mounted, fmt.Errorf("mounting the 9p share %s on %s (-o %s): %w (is the 9p module loaded?)", s.Tag, s.Target, data, err)
		}
		mode := "rw"
		if s.ReadOnly {
			mode = "ro"
		}
		fmt.Fprintf(log, "paddock-agent[%d]: init: mounted 9p share %s on %s (%s,%s)\n", os.Getpid(), s.Tag, s.Target, mode, data)
		mounted = append(mounted, s)
	}
	return mounted, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
