package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ScratchFormat is the format of scratch disks.
const ScratchFormat = "qcow2"

// Scratch is a per-guest copy-on-write disk: a qcow2 overlay whose backing file is a
// shared base image. The guest's writes land in the overlay; the base is never
// modified. Attach it as a virtio-blk disk (hypervisor.Disk{Path: s.Path, Format:
// ScratchFormat, Target: "vda"}) and call Remove once the guest is destroyed.
//
// Overlays are made with qemu-img (qemu-utils) rather than libvirt's storage pool API,
// so that images needs no cgo and no storage pool definitions on the host.
type Scratch struct {
	// Path is the overlay file.
	Path string
	// Base is the backing image (absolute) and BaseFormat its format ("raw", "qcow2").
	Base, BaseFormat string
	// SizeBytes is the virtual size of the disk.
	SizeBytes int64
}

// NewScratch creates an overlay on base in dir (which must exist and be reachable by
// the QEMU process), named scratch-<random>.qcow2. sizeMiB is the disk's virtual size;
// 0 means the base's size, and a size smaller than the base is an error.
func NewScratch(ctx context.Context, dir, base string, sizeMiB int) (*Scratch, error) {
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		return nil, fmt.Errorf("creating scratch disk: qemu-img not found: install qemu-utils")
	}
	base, err = filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("scratch disk base %s: %w", base, err)
	}
	if _, err := os.Stat(base); err != nil {
		return nil, fmt.Errorf("%w: scratch disk base image %s: %v", ErrInvalid, base, errors.Unwrap(err))
	}
	if sizeMiB < 0 {
		return nil, fmt.Errorf("%w: scratch disk size %d MiB: use 0 (the base's size) or more", ErrInvalid, sizeMiB)
	}
	out, err := exec.CommandContext(ctx, qemuImg, "info", "--output=json", "-U", base).Output()
	if err != nil {
		return nil, fmt.Errorf("reading scratch disk base image %s: %w: %s", base, err, stderrOf(err))
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("decoding qemu-img info of %s: %w", base, err)
	}
	size := info.VirtualSize
	if sizeMiB > 0 {
		size = int64(sizeMiB) << 20
		if size < info.VirtualSize {
			return nil, fmt.Errorf("%w: scratch disk of %d MiB is smaller than its base %s (%d bytes): give at least %d MiB or 0", ErrInvalid, sizeMiB, base, info.VirtualSize, (info.VirtualSize+1<<20-1)>>20)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating scratch disk directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, "scratch-"+randHex()+".qcow2")
	cmd := exec.CommandContext(ctx, qemuImg, "create", "-q", "-f", ScratchFormat, "-b", base, "-F", info.Format, path, fmt.Sprint(size))
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("creating scratch disk %s on %s: %w: %s", path, base, err, bytes.TrimSpace(out))
	}
	return &Scratch{Path: path, Base: base, BaseFormat: info.Format, SizeBytes: size}, nil
}

// Remove deletes the overlay. Removing one that is already gone is not an error.
func (s *Scratch) Remove() error {
	if err := os.Remove(s.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing scratch disk %s: %w", s.Path, err)
	}
	return nil
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}
