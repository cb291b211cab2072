//go:build linux

package pid1

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// HandlerDisk is the read-only disk an image's handler binaries are on (images'
// handler disk): the virtio-blk serial the host attaches it with, its filesystem and
// where it is mounted.
type HandlerDisk struct {
	Serial, FSType, Mount string
}

// HandlerDiskWait is how long MountHandlerDisk waits for the disk's block device to
// appear. virtio_blk probes its disks as it loads, so it is there at once when the
// host attached it; the wait only covers a slow probe.
const HandlerDiskWait = 5 * time.Second

// FindDiskBySerial returns the block device (/dev/<name>) whose sysDir/block/<name>/serial
// is serial, polling until it appears or ctx ends. The error lists the disks seen
// with their serials.
func FindDiskBySerial(ctx context.Context, sysDir, serial string) (string, error) {
	pattern := filepath.Join(sysDir, "block", "*", "serial")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		files, _ := filepath.Glob(pattern)
		var seen []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			name := filepath.Base(filepath.Dir(f))
			s := strings.TrimSpace(string(b))
			if s == serial {
				return filepath.Join("/dev", name), nil
			}
			seen = append(seen, fmt.Sprintf("%s (serial %q)", name, s))
		}
		select {
		case <-ctx.Done():
			sort.Strings(seen)
			if len(seen) == 0 {
				seen = []string{"none"}
			}
			return "", fmt.Errorf("no block device with serial %q in %s (disks seen: %s): the host did not attach the image's handler disk (is virtio_blk loaded?)",
				serial, filepath.Join(sysDir, "block"), strings.Join(seen, ", "))
		case <-tick.C:
		}
	}
}

// MountHandlerDisk finds the handler disk by its serial (FindDiskBySerial, up to
// HandlerDiskWait) and mounts it read-only (nodev, nosuid) at d.Mount. Only PID 1
// may call it. The error says which step failed and what the guest saw, for the
// console: a guest without its handler disk has no handlers to start.
func MountHandlerDisk(sysDir string, d HandlerDisk) (dev string, err error) {
	if !IsInit() {
		return "", errors.New("pid1: refusing to mount the handler disk: this process is not PID 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), HandlerDiskWait)
	defer cancel()
	if dev, err = FindDiskBySerial(ctx, sysDir, d.Serial); err != nil {
		return "", fmt.Errorf("handler disk: %w", err)
	}
	if err := os.MkdirAll(d.Mount, 0o755); err != nil {
		return dev, fmt.Errorf("handler disk: creating mount point %s: %w", d.Mount, err)
	}
	if err := unix.Mount(dev, d.Mount, d.FSType, unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		hint := "the disk is damaged or not the image's handler disk: rebuild the image"
		if errors.Is(err, unix.ENODEV) {
			hint = fmt.Sprintf("the kernel has no %s filesystem: the image must load its module", d.FSType)
		}
		return dev, fmt.Errorf("handler disk: mounting %s (serial %q) read-only as %s on %s: %w (%s)", dev, d.Serial, d.FSType, d.Mount, err, hint)
	}
	return dev, nil
}
