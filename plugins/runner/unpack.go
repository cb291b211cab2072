package runner

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
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
// What it wrote is checked on the way: a zstd frame with a content checksum (the
// image builder writes one) is checked by the decoder (xxhash64 of the decompressed
// bytes), and checked is true; otherwise sum is the sha256 of what it wrote, for the
// caller to compare with the manifest's. Both are zero when path was there already.
// Either way the binary is not read again before this start's exec. Skipping the
// sha256 for a zstd frame loses nothing: the frame and the manifest's sha256 come
// from the same initramfs, so whoever could change one could change the other; the
// frame's checksum catches corruption. Under TCG the sha256 of a 12.8 MB handler took
// 6–17 s of its first start (BenchmarkFirstTask). Later starts (restarts after a
// crash) check the sha256 before exec as before.
func unpack(packed, path string) (sum []byte, checked bool, err error) {
	if _, err := os.Stat(path); err == nil {
		return nil, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("checking for the unpacked binary %s: %w", path, err)
	}
	in, err := os.Open(packed)
	if err != nil {
		return nil, false, fmt.Errorf("unpacking %s: %w", packed, err)
	}
	defer in.Close()
	br := bufio.NewReaderSize(in, 64<<10)
	magic, _ := br.Peek(len(zstdMagic) + 1) // and a zstd frame header's descriptor
	var src io.Reader
	switch {
	case bytes.HasPrefix(magic, zstdMagic):
		checked = len(magic) > len(zstdMagic) && magic[len(zstdMagic)]&0x04 != 0 // Content_Checksum_flag
		// One goroutine, no large window buffers kept: the guest is small and the
		// file is read once.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, false, fmt.Errorf("unpacking %s: %w", packed, err)
		}
		defer zr.Close()
		src = zr
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, false, fmt.Errorf("unpacking %s: not gzip: %w", packed, err)
		}
		src = zr
	default:
		return nil, false, fmt.Errorf("unpacking %s: neither zstd nor gzip (it starts % x): rebuild the image", packed, magic)
	}
	tmp := path + ".unpacking"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return nil, false, fmt.Errorf("unpacking %s: %w", packed, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	var hs hash.Hash
	w := io.Writer(out)
	if !checked {
		hs = sha256.New()
		w = io.MultiWriter(out, hs)
	}
	if _, err := io.Copy(w, src); err != nil {
		out.Close()
		return nil, false, fmt.Errorf("unpacking %s to %s: %w", packed, tmp, err)
	}
	if err := out.Close(); err != nil {
		return nil, false, fmt.Errorf("unpacking %s to %s: %w", packed, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, false, fmt.Errorf("unpacking %s: %w", packed, err)
	}
	// The compressed copy is not needed again: free its pages (in an initramfs, the
	// guest's memory).
	if err := os.Remove(packed); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("removing %s after unpacking it: %w", packed, err)
	}
	if checked {
		return nil, true, nil
	}
	return hs.Sum(nil), false, nil
}
