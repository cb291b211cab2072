package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// FS is the filesystem Store: blob d lives at <dir>/sha256/<first 2 hex>/<hex>. Put writes
// to a file in <dir>/tmp while hashing, fsyncs, and renames it into place only when digest
// and size match. Files are 0600 and directories 0700 (only the server reads them).
//
// One process owns a directory: OpenFS removes the temp files a crash left behind, which
// would break another process's uploads into the same directory.
type FS struct {
	dir string
	// reserve is the free space (bytes) a Put never takes: SetReserve.
	reserve int64
}

// SetReserve makes every later Put refuse to leave fewer than n bytes free on the blob
// directory's disk (0: fill it up), before it reads the data when the size is known and
// every spaceCheckEvery bytes while it writes. By default the task database shares that
// disk (<data_dir>/blobs): a tenant uploading blobs must not take the room its commits
// need. Call it before the store is used.
func (s *FS) SetReserve(n int64) {
	if n < 0 {
		n = 0
	}
	s.reserve = n
}

var _ Store = (*FS)(nil)

// OpenFS opens (creating when missing) the filesystem store at dir, and removes stale
// temporary files from an earlier crash.
func OpenFS(dir string) (*FS, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: blob directory is empty: set server.blob_dir (default <data_dir>/blobs)", ErrInvalid)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening blob store %s: %w", dir, err)
	}
	s := &FS{dir: abs}
	for _, d := range []string{abs, filepath.Join(abs, "sha256"), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("opening blob store %s: %w", abs, err)
		}
	}
	ents, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("opening blob store %s: listing stale uploads: %w", abs, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.tmpDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("opening blob store %s: removing stale upload: %w", abs, err)
		}
	}
	return s, nil
}

// Dir returns the store's (absolute) directory.
func (s *FS) Dir() string { return s.dir }

// String returns "fs:<dir>".
func (s *FS) String() string { return "fs:" + s.dir }

// Path returns the file that holds blob d (whether or not it exists), or "" when d is not
// a valid digest. Callers on the same machine may hard-link or read it; they must never
// write it.
func (s *FS) Path(d Digest) string {
	h := d.Hex()
	if h == "" {
		return ""
	}
	return filepath.Join(s.dir, "sha256", h[:2], h)
}

func (s *FS) tmpDir() string { return filepath.Join(s.dir, "tmp") }

// Stat implements Store.
func (s *FS) Stat(ctx context.Context, d Digest) (Info, error) {
	if err := d.Validate(); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.Path(d))
	if err != nil {
		return Info{}, s.fileErr("stat", d, err)
	}
	return Info{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Open implements Store.
func (s *FS) Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	f, err := os.Open(s.Path(d))
	if err != nil {
		return nil, s.fileErr("open", d, err)
	}
	if err := checkOffset(f, d, offset); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening blob %s in %s at offset %d: %w", d, s, offset, err)
	}
	return f, nil
}

func checkOffset(f *os.File, d Digest, offset int64) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("opening blob %s: %w", d, err)
	}
	return CheckOffset(d, offset, fi.Size())
}

// CheckOffset returns an error wrapping ErrInvalid unless 0 <= offset <= size.
func CheckOffset(d Digest, offset, size int64) error {
	if offset < 0 || offset > size {
		return fmt.Errorf("%w: offset %d of blob %s: want 0..%d (its size)", ErrInvalid, offset, d, size)
	}
	return nil
}

// Put implements Store.
func (s *FS) Put(ctx context.Context, d Digest, size int64, r io.Reader) (Info, error) {
	if err := d.Validate(); err != nil {
		return Info{}, err
	}
	if size < -1 {
		return Info{}, fmt.Errorf("%w: size %d of blob %s: want a size >= 0, or -1 when unknown", ErrInvalid, size, d)
	}
	if info, err := s.Stat(ctx, d); err == nil {
		return info, nil
	} else if !errors.Is(err, ErrNotFound) {
		return Info{}, err
	}
	tmp, err := os.CreateTemp(s.tmpDir(), d.Hex()[:16]+".*")
	if err != nil {
		return Info{}, s.ioErr("creating upload file", d, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := checkSpace(tmp, size, s.reserve); err != nil {
		return Info{}, s.ioErr("checking free space for", d, err)
	}
	h := NewHasher()
	w := &ErrWriter{W: tmp}
	if s.reserve > 0 {
		w.W = &spaceWriter{f: tmp, reserve: s.reserve}
	}
	if _, err := hashCopy(ctx, w, h, SizeLimitReader(d, r, size)); err != nil {
		if w.Err != nil {
			return Info{}, s.ioErr("writing", d, w.Err)
		}
		return Info{}, fmt.Errorf("storing blob %s in %s: reading the data (nothing stored): %w", d, s, err)
	}
	if err := h.Verify(d, size); err != nil {
		return Info{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Info{}, s.ioErr("syncing", d, err)
	}
	if err := tmp.Close(); err != nil {
		return Info{}, s.ioErr("closing", d, err)
	}
	final := s.Path(d)
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return Info{}, s.ioErr("making directory for", d, err)
	}
	// A concurrent Put of the same blob may have renamed first: renaming over it replaces
	// identical bytes atomically, so readers see one or the other, never a mix.
	if err := os.Rename(tmp.Name(), final); err != nil {
		return Info{}, s.ioErr("moving into place", d, err)
	}
	done = true
	syncDir(filepath.Dir(final))
	return s.Stat(ctx, d)
}

// syncDir makes a rename in dir durable; errors are ignored (some filesystems refuse to
// fsync a directory, and the blob is already complete and verified).
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// Delete implements Store.
func (s *FS) Delete(ctx context.Context, d Digest) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := os.Remove(s.Path(d)); err != nil {
		return s.fileErr("delete", d, err)
	}
	return nil
}

// List implements Store.
func (s *FS) List(ctx context.Context, after Digest, limit int) ([]Info, error) {
	if after != "" {
		if err := after.Validate(); err != nil {
			return nil, fmt.Errorf("listing after: %w", err)
		}
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	afterHex := after.Hex()
	root := filepath.Join(s.dir, "sha256")
	dirs, err := os.ReadDir(root)
	if err != nil {
		return nil, s.ioErr("listing", "", err)
	}
	var out []Info
	for _, dir := range dirs { // os.ReadDir sorts by name
		if !dir.IsDir() || len(dir.Name()) != 2 || (afterHex != "" && dir.Name() < afterHex[:2]) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ents, err := os.ReadDir(filepath.Join(root, dir.Name()))
		if err != nil {
			return nil, s.ioErr("listing", "", err)
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			if n := e.Name(); n > afterHex && strings.HasPrefix(n, dir.Name()) && Digest(DigestPrefix+n).Validate() == nil {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			fi, err := os.Stat(filepath.Join(root, dir.Name(), n))
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted while listing
			} else if err != nil {
				return nil, s.ioErr("listing", "", err)
			}
			out = append(out, Info{Digest: Digest(DigestPrefix + n), Size: fi.Size(), ModTime: fi.ModTime()})
			if len(out) == limit {
				return out, nil
			}
		}
	}
	return out, nil
}

// fileErr maps an error about one blob's file to the error classes.
func (s *FS) fileErr(op string, d Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s: blob %s is not in %s", ErrNotFound, op, d, s)
	}
	return s.ioErr(op, d, err)
}

// ioErr wraps a filesystem error; a full disk gets ErrUnavailable and says what to do.
func (s *FS) ioErr(op string, d Digest, err error) error {
	what := "blob store " + s.String()
	if d != "" {
		what = "blob " + string(d) + " in " + s.String()
	}
	if se := (*spaceError)(nil); errors.As(err, &se) && se.reserve > 0 {
		return fmt.Errorf("%w: %s %s: the disk of %s is at its reserve (nothing was stored): free space there (e.g. delete old blobs or lower server.blob_retention), move server.blob_dir to a larger disk, or lower server.blob_reserve: %w", ErrUnavailable, op, what, s.dir, err)
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %s %s: the disk of %s is full (nothing was stored): free space there (e.g. delete old blobs or lower server.blob_retention) or move server.blob_dir to a larger disk: %w", ErrUnavailable, op, what, s.dir, err)
	}
	return fmt.Errorf("%s %s: %w", op, what, err)
}

// spaceCheckEvery is how many bytes a Put writes between checks of the reserve.
const spaceCheckEvery = 64 << 20

// spaceWriter writes to f and checks, every spaceCheckEvery bytes, that the disk keeps
// reserve bytes free: concurrent uploads of unknown or large size each passed the check
// before their first byte, and together could still eat the reserve.
type spaceWriter struct {
	f       *os.File
	reserve int64
	since   int64 // bytes written since the last check
}

func (w *spaceWriter) Write(p []byte) (int, error) {
	if w.since += int64(len(p)); w.since >= spaceCheckEvery {
		w.since = 0
		if err := checkSpace(w.f, int64(len(p)), w.reserve); err != nil {
			return 0, err
		}
	}
	return w.f.Write(p)
}

// ErrWriter remembers the error of its writer W in Err, so a failed copy can tell a
// write error (the destination's fault) from a read error (the data's source).
type ErrWriter struct {
	W   io.Writer
	Err error
}

func (e *ErrWriter) Write(p []byte) (int, error) {
	n, err := e.W.Write(p)
	if err != nil {
		e.Err = err
	}
	return n, err
}

// hashChunk is the unit hashCopy reads, hashes and writes.
const hashChunk = 1 << 20

// hashCopy copies src to dst like CopyContext and writes the same bytes to h, hashing
// each chunk in another goroutine while it is written (on two cores that hides most of
// the hashing). It returns src's or dst's first error.
func hashCopy(ctx context.Context, dst io.Writer, h *Hasher, src io.Reader) (int64, error) {
	buf := make([]byte, hashChunk)
	chunks := make(chan []byte)
	hashed := make(chan struct{})
	go func() {
		for p := range chunks {
			h.Write(p)
			hashed <- struct{}{}
		}
	}()
	defer close(chunks)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, rerr := fill(src, buf)
		if n > 0 {
			chunks <- buf[:n]
			_, werr := dst.Write(buf[:n])
			<-hashed
			if werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// fill reads from r until buf is full or r fails; it returns r's error as is (io.EOF at
// the end), unlike io.ReadFull.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// spaceError: a write would leave the disk with less than the reserve free.
type spaceError struct{ free, need, reserve int64 }

func (e *spaceError) Error() string {
	if e.reserve == 0 {
		return fmt.Sprintf("%d bytes free, %d needed", e.free, e.need)
	}
	return fmt.Sprintf("%d bytes free, %d needed, and %d must stay free (server.blob_reserve, room for the task database)", e.free, e.need, e.reserve)
}

// Unwrap makes a spaceError an ENOSPC, so it reads as a full disk.
func (e *spaceError) Unwrap() error { return syscall.ENOSPC }
