package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/paddockvm/paddock/blob"
)

// Modes of the disk tier: QEMU (user libvirt-qemu) reads hard links of its files.
const (
	fileMode = 0o644
	dirMode  = 0o755
)

// mkdir makes dir (and its parents) with mode 0755 whatever the umask.
func mkdir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	return os.Chmod(dir, dirMode)
}

// verifyFile hashes the file at path and checks it is blob d of size bytes.
func verifyFile(ctx context.Context, path string, d blob.Digest, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := blob.NewHasher()
	if _, err := blob.CopyContext(ctx, h, f); err != nil {
		return fmt.Errorf("hashing %s: %w", path, err)
	}
	return h.Verify(d, size)
}

// isNoSpace reports whether err says the disk (or the user's quota) is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// diskErr wraps an error writing into dir (the cache's or a destination's) while doing
// what; a full disk gets ErrFull and blob.ErrUnavailable and says what to do.
func diskErr(what, dir string, err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%s: the disk of %s is full, nothing was kept (%w, %w): free space there, or lower host.cache_disk_bytes below the free space of host.cache_dir: %w",
			what, dir, ErrFull, blob.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: writing in %s: %w", what, dir, err)
}

// createTemp creates a temporary file in dir for blob bytes.
func createTemp(dir string) (*os.File, error) {
	return os.CreateTemp(dir, ".paddock-blob-*")
}

// finishFile makes f readable by everyone (QEMU), closes it, and renames it to dst. On
// error it removes f.
func finishFile(f *os.File, dst string) error {
	err := f.Chmod(fileMode)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), dst)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// writeFile writes data to dst atomically (a temporary file in dst's directory, renamed).
func writeFile(dst string, data []byte) error {
	f, err := createTemp(filepath.Dir(dst))
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	return finishFile(f, dst)
}

// copyFile copies src to dst atomically.
func copyFile(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := createTemp(filepath.Dir(dst))
	if err != nil {
		return err
	}
	if _, err := blob.CopyContext(ctx, f, in); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	return finishFile(f, dst)
}

// linkFile makes dst a hard link of src (replacing what dst was), or, when dst is on
// another filesystem, a copy; it reports whether it copied.
func linkFile(ctx context.Context, src, dst string) (copied bool, err error) {
	err = os.Link(src, dst)
	if errors.Is(err, os.ErrExist) {
		if a, aerr := os.Stat(src); aerr == nil {
			if b, berr := os.Stat(dst); berr == nil && os.SameFile(a, b) {
				return false, nil
			}
		}
		err = linkOver(src, dst)
	}
	if errors.Is(err, syscall.EXDEV) {
		return true, copyFile(ctx, src, dst)
	}
	return false, err
}

// linkOver replaces dst by a hard link of src: it links beside dst and renames over it,
// so dst is never missing or partial.
func linkOver(src, dst string) error {
	f, err := createTemp(filepath.Dir(dst))
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
