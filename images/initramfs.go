package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// archive is the initramfs content: guest path (no leading '/') → entry.
type archive map[string]entry

type entry struct {
	mode cpio.FileMode
	data []byte
}

func (a archive) dirs(p string) {
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		if _, ok := a[strings.TrimPrefix(d, "/")]; !ok {
			a[strings.TrimPrefix(d, "/")] = entry{mode: cpio.TypeDir | 0o755}
		}
	}
}

func (a archive) file(guest string, data []byte, perm cpio.FileMode) {
	a.dirs(guest)
	a[strings.TrimPrefix(guest, "/")] = entry{mode: cpio.TypeReg | perm, data: data}
}

func (a archive) dir(guest string, perm cpio.FileMode) {
	a.dirs(guest)
	a[strings.TrimPrefix(guest, "/")] = entry{mode: cpio.TypeDir | perm}
}

// write writes a as a gzip-compressed cpio (newc) archive, reproducibly: entries sorted
// by path (so each directory precedes its contents), owner root:root, modification
// time 0 (the epoch), inode numbers by position, one link each; a gzip header with no
// name and no time.
func (a archive) write(w io.Writer) error {
	names := make([]string, 0, len(a))
	for n := range a {
		names = append(names, n)
	}
	sort.Strings(names)
	zw, err := kgzip.NewWriterLevel(w, kgzip.DefaultCompression)
	if err != nil {
		return err
	}
	zw.Header = kgzip.Header{OS: 3} // Unix; no name, no mtime
	cw := cpio.NewWriter(zw)
	epoch := time.Unix(0, 0)
	for i, n := range names {
		e := a[n]
		hdr := &cpio.Header{Name: n, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch, Links: 1, Inode: int64(i + 1)}
		if e.mode.IsDir() {
			hdr.Links = 2
		}
		if err := cw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing cpio header of %s: %w", n, err)
		}
		if _, err := cw.Write(e.data); err != nil {
			return fmt.Errorf("writing %s into the cpio archive: %w", n, err)
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("closing the cpio archive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("closing the gzip stream: %w", err)
	}
	return nil
}

// PackedSuffix ended the name of a handler binary the initramfs held zstd-compressed
// (Binary.Packed) in images built before handler disks (builder 3); older ones held it
// gzip-compressed as <name>.gz. Images built now hold no packed handlers.
const PackedSuffix = ".zst"

// readModule returns the plain .ko content of a module file and the suffix removed:
// .ko.xz (through the xz command, xz-utils), .ko.zst and .ko.gz are decompressed here
// so that the guest only ever loads plain .ko files.
func readModule(ctx context.Context, p string) (data []byte, ext string, err error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, "", fmt.Errorf("reading kernel module %s: %w", p, err)
	}
	switch {
	case strings.HasSuffix(p, ".ko"):
		return raw, "", nil
	case strings.HasSuffix(p, ".ko.gz"):
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			data, err = io.ReadAll(zr)
		}
		if err != nil {
			return nil, "", fmt.Errorf("decompressing kernel module %s: %w", p, err)
		}
		return data, ".gz", nil
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, "", fmt.Errorf("decompressing kernel module %s: %w", p, err)
		}
		defer zr.Close()
		if data, err = io.ReadAll(zr); err != nil {
			return nil, "", fmt.Errorf("decompressing kernel module %s: %w", p, err)
		}
		return data, ".zst", nil
	case strings.HasSuffix(p, ".ko.xz"):
		cmd := exec.CommandContext(ctx, "xz", "-dc", p)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		data, err := cmd.Output()
		if err != nil {
			return nil, "", fmt.Errorf("decompressing kernel module %s with xz (install xz-utils): %w: %s", p, err, stderr.String())
		}
		return data, ".xz", nil
	}
	return nil, "", fmt.Errorf("kernel module %s: unknown file type (want .ko, .ko.xz, .ko.zst or .ko.gz)", p)
}
