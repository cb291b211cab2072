package runner

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// unpack writes the gzip-compressed file packed, decompressed, to path (mode 0755)
// unless path exists already, then removes packed. It writes path+".unpacking" first
// and renames it, so a path that exists is whole; a failure leaves packed in place.
// The caller checks the result's sha256.
func unpack(packed, path string) (err error) {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("checking for the unpacked binary %s: %w", path, err)
	}
	in, err := os.Open(packed)
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", packed, err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return fmt.Errorf("unpacking %s: not gzip: %w", packed, err)
	}
	tmp := path + ".unpacking"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("unpacking %s: %w", packed, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(out, zr); err != nil {
		out.Close()
		return fmt.Errorf("unpacking %s to %s: %w", packed, tmp, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("unpacking %s to %s: %w", packed, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("unpacking %s: %w", packed, err)
	}
	// The compressed copy is not needed again: free its pages (in an initramfs, the
	// guest's memory).
	if err := os.Remove(packed); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s after unpacking it: %w", packed, err)
	}
	return nil
}
