package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// The handler disk: since builder paddock-images/4 an image holds its handler binaries
// not in the initramfs (which lives in guest RAM, in every guest) but on one read-only
// erofs filesystem image beside it, HandlerDiskFile. Every guest of the image attaches
// that file as a read-only, shareable virtio-blk disk with the serial HandlerDiskSerial
// (vmpool.HandlerDisk); PID 1 finds it by /sys/block/*/serial, loads erofs and mounts
// it read-only at GuestHandlersDir, and the agent starts each handler straight from it:
// a guest holds a handler's pages only while it runs (page cache, given back under
// pressure), and a first start unpacks nothing.
//
// Images built before (builder 3 and older) keep their handlers zstd- or
// gzip-compressed in the initramfs together with the agent that unpacks them; they boot
// as before (they have no HandlerDisk, so no disk is attached).
const (
	// HandlerDiskFile is the handler disk's file name in an image directory.
	HandlerDiskFile = "handlers.erofs"
	// HandlerDiskSerial is the virtio-blk serial the handler disk is attached with
	// (at most 20 bytes: virtio-blk's serial field).
	HandlerDiskSerial = "paddock-handlers"
	// HandlerDiskFSType is the handler disk's filesystem.
	HandlerDiskFSType = "erofs"
	// MkfsErofs is the program that writes the handler disk, from Debian's
	// erofs-utils (scripts/setup.sh installs it).
	MkfsErofs = "mkfs.erofs"
)

// HandlerDiskModules are the kernel modules an image with handlers adds to
// kmod.DefaultGuestModules to mount its handler disk (their dependencies come from
// modules.dep). erofs needs libcrc32c, whose init fails (ENOENT) without a crc32c
// algorithm, which modules.dep names only as a softdep: hence crc32c_generic first.
var HandlerDiskModules = []string{"crc32c_generic", HandlerDiskFSType}

// HandlerDisk is the read-only filesystem image that holds an image's handler binaries
// (Manifest.HandlerDisk).
type HandlerDisk struct {
	// File is the disk image: Path is its name in the image directory, Size and SHA256
	// are the file's (the host checks them before attaching it: Image.CheckHandlerDisk).
	File
	// FSType is the filesystem ("erofs"), Serial the virtio-blk serial the guest finds
	// the disk by, and Mount where the guest mounts it (GuestHandlersDir).
	FSType string `json:"fstype"`
	Serial string `json:"serial"`
	Mount  string `json:"mount"`
}

// HandlerDiskPath returns the path of the image's handler disk, or "" when the image
// has none (no handlers, or an image built before handler disks).
func (i Image) HandlerDiskPath() string {
	if i.Manifest.HandlerDisk == nil {
		return ""
	}
	return filepath.Join(i.Dir, i.Manifest.HandlerDisk.Path)
}

// verifiedDisks remembers handler disks whose content matched their manifest, by file
// identity (path, size, times, inode), so that a process hashes each one once.
var verifiedDisks sync.Map // diskID → struct{}

type diskID struct {
	path                    string
	size, mtime, ctime, ino int64
	dev                     uint64
}

// CheckHandlerDisk checks that the image's handler disk is there with the size and
// SHA-256 its manifest records (the guest does not hash the handler binaries it starts
// from the disk: this check stands for it). A file is hashed once per process while
// it is unchanged. Nil for an image without a handler disk.
func (i Image) CheckHandlerDisk() error {
	hd := i.Manifest.HandlerDisk
	if hd == nil {
		return nil
	}
	p := i.HandlerDiskPath()
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("image %.12s: handler disk: %w: rebuild the image (paddock image build)", i.Digest, err)
	}
	id := diskID{path: p, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ctime, id.ino, id.dev = st.Ctim.Nano(), int64(st.Ino), uint64(st.Dev)
	}
	if _, ok := verifiedDisks.Load(id); ok {
		return nil
	}
	sum, n, err := hashFile(p)
	if err != nil {
		return fmt.Errorf("image %.12s: hashing handler disk %s: %w", i.Digest, p, err)
	}
	if n != hd.Size || sum != hd.SHA256 {
		return fmt.Errorf("image %.12s: handler disk %s is damaged: %d bytes with sha256 %s, the manifest says %d bytes with sha256 %s: rebuild the image (paddock image build)",
			i.Digest, p, n, sum, hd.Size, hd.SHA256)
	}
	verifiedDisks.Store(id, struct{}{})
	return nil
}

// lookMkfsErofs finds mkfs.erofs on PATH, or says which package to install.
func lookMkfsErofs() (string, error) {
	p, err := exec.LookPath(MkfsErofs)
	if err != nil {
		return "", fmt.Errorf("%w: %s not found: an image with handlers needs it for its handler disk: install the erofs-utils package (apt-get install erofs-utils, or run scripts/setup.sh)", ErrInvalid, MkfsErofs)
	}
	return p, nil
}

// diskFile is one file on the handler disk.
type diskFile struct {
	name string
	data []byte
}

// writeHandlerDisk writes files (mode 0755, owner root) into a reproducible erofs image
// at out with mkfs.erofs: uncompressed (the guest runs the binaries straight from it),
// a fixed UUID and time stamp, no extended attributes.
func writeHandlerDisk(ctx context.Context, out string, files []diskFile) error {
	mkfs, err := lookMkfsErofs()
	if err != nil {
		return err
	}
	src, err := os.MkdirTemp(filepath.Dir(out), "handlers-")
	if err != nil {
		return fmt.Errorf("creating the handler disk's directory: %w", err)
	}
	defer os.RemoveAll(src)
	if err := os.Chmod(src, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(src, f.name)
		if err := os.WriteFile(p, f.data, 0o755); err != nil {
			return fmt.Errorf("writing handler %s for the handler disk: %w", f.name, err)
		}
		if err := os.Chmod(p, 0o755); err != nil { // umask
			return err
		}
	}
	cmd := exec.CommandContext(ctx, mkfs, "--quiet", "-x-1", "-T0", "-U00000000-0000-0000-0000-000000000000", "--all-root", out, src)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("writing the handler disk with %s: %w: %s", MkfsErofs, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return fmt.Errorf("running %s: %w", MkfsErofs, err)
	}
	return os.Chmod(out, 0o644)
}
