package runner

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/klauspost/compress/zstd"
)

// Magic numbers of the compressed formats unpack reads.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// unpack writes the compressed file packed, decompressed, to path (mode 0755) unless
// path exists already, then removes packed. packed is zstd (images since 2026-12-02:
// under TCG it decompresses about 6 times faster than gzip and is smaller) or gzip
// (older images), told apart by its magic number. It writes path+".unpacking" first
// and renames it, so a path that exists is whole; a failure leaves packed in place.
//
// sum is the sha256 of what it wrote, nil when path was there already: the caller
// compares it with the manifest's instead of reading the binary again.
func unpack(packed, path string) (sum []byte, err error) {
	if _, err := os.Stat(path); err == nil {
		return nil, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("checking for the unpacked binary %s: %w", path, err)
	}
	in, err := os.Open(packed)
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", packed, err)
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 64<<10)
	magic, _ := br.Peek(len(zstdMagic))
	var src io.Reader
	switch {
	case bytes.HasPrefix(magic, zstdMagic):
		// One goroutine, no large window buffers kept: the guest is small and the
		// file is read once.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", packed, err)
		}
		defer zr.Close()
		src = zr
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("unpacking %s: not gzip: %w", packed, err)
		}
		src = zr
	default:
		return nil, fmt.Errorf("unpacking %s: neither zstd nor gzip (it starts % x): rebuild the image", packed, magic)
	}
	tmp := path + ".unpacking"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", packed, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	hs := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, hs), src); err != nil {
		out.Close()
		return nil, fmt.Errorf("unpacking %s to %s: %w", packed, tmp, err)
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("unpacking %s to %s: %w", packed, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", packed, err)
	}
	// The compressed copy is not needed again: free its pages (in an initramfs, the
	// guest's memory).
	if err := os.Remove(packed); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing %s after unpacking it: %w", packed, err)
	}
	return hs.Sum(nil), nil
}
