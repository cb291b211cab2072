package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// Error classes. Every error a Store returns that is one of these wraps it: test with
// errors.Is, never by its text.
var (
	// ErrNotFound: the blob is not in the store.
	ErrNotFound = errors.New("blob not found")
	// ErrMismatch: the bytes given to Put have another digest or size than the caller named.
	// Nothing was stored.
	ErrMismatch = errors.New("blob digest or size mismatch")
	// ErrInvalid: bad input (a malformed digest, a negative offset, ...). Retrying the same
	// call will fail the same way.
	ErrInvalid = errors.New("invalid blob request")
	// ErrUnavailable: the backend cannot serve now (down, unreachable, disk full). Retry
	// later; the message says what to fix.
	ErrUnavailable = errors.New("blob store unavailable")
	// ErrTooLarge: the blob is larger than a configured limit.
	ErrTooLarge = errors.New("blob too large")
)

// DigestPrefix starts every Digest.
const DigestPrefix = "sha256:"

// Digest names a blob: "sha256:" followed by 64 lowercase hex digits of the SHA-256 of its
// bytes. Make one with ParseDigest, FromBytes, or a Hasher.
type Digest string

// digestForm is the text an error shows to say what a digest looks like.
const digestForm = `"sha256:" followed by 64 lowercase hex digits (e.g. the output of sha256sum with "sha256:" in front)`

// ParseDigest checks that s is a digest ("sha256:" + 64 lowercase hex digits) and returns
// it. The error wraps ErrInvalid and says the expected form.
func ParseDigest(s string) (Digest, error) {
	if err := Digest(s).Validate(); err != nil {
		return "", err
	}
	return Digest(s), nil
}

// Validate returns nil when d has the form "sha256:" + 64 lowercase hex digits, else an
// error wrapping ErrInvalid that names the expected form.
func (d Digest) Validate() error {
	s := string(d)
	if len(s) != len(DigestPrefix)+64 || s[:len(DigestPrefix)] != DigestPrefix {
		return fmt.Errorf("%w: digest %q: want %s", ErrInvalid, s, digestForm)
	}
	for _, c := range s[len(DigestPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: digest %q: want %s", ErrInvalid, s, digestForm)
		}
	}
	return nil
}

// Hex returns the 64 hex digits after "sha256:" ("" when d is not a valid digest).
func (d Digest) Hex() string {
	if d.Validate() != nil {
		return ""
	}
	return string(d[len(DigestPrefix):])
}

// String returns d as text.
func (d Digest) String() string { return string(d) }

// FromBytes returns the digest of b.
func FromBytes(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest(DigestPrefix + hex.EncodeToString(sum[:]))
}

// Info describes a stored blob.
type Info struct {
	Digest  Digest
	Size    int64
	ModTime time.Time // when the store wrote it (servers use it for retention)
}

// DefaultListLimit is the page size List uses when asked for limit <= 0.
const DefaultListLimit = 1000

// Store keeps blobs by digest. Implementations are safe for concurrent use and stream:
// none holds a whole blob in memory.
type Store interface {
	// Stat returns the blob's Info, or an error wrapping ErrNotFound.
	Stat(ctx context.Context, d Digest) (Info, error)
	// Open returns the blob's bytes from offset to its end (offset == size gives an empty
	// reader; offset > size or < 0 is ErrInvalid). The caller closes the reader.
	Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error)
	// Put stores the bytes of r as blob d. size is the expected length, or -1 when unknown.
	// The blob becomes visible only after its digest (and size) are verified; on a
	// mismatch nothing is stored and the error wraps ErrMismatch naming expected and got.
	// An error from r (a cut-off upload) stores nothing. If d is already stored, Put
	// reads nothing from r and returns the existing Info. Concurrent Puts of one blob are
	// safe.
	Put(ctx context.Context, d Digest, size int64, r io.Reader) (Info, error)
	// Delete removes the blob (ErrNotFound when it is not there). Readers that already
	// opened it may finish.
	Delete(ctx context.Context, d Digest) error
	// List returns up to limit blobs (limit <= 0: DefaultListLimit) with digests greater
	// than after ("" lists from the start), sorted by digest. Fewer than limit means the end.
	List(ctx context.Context, after Digest, limit int) ([]Info, error)
	// String names the store for logs and errors, e.g. "fs:/var/lib/paddock/blobs".
	String() string
}

// Hasher is an io.Writer that computes a blob's digest and counts its bytes; feed it
// with io.Copy or io.TeeReader, or use HashingReader.
type Hasher struct {
	h hash.Hash
	n int64
}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{h: sha256.New()} }

// Write hashes p; it never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	h.h.Write(p)
	h.n += int64(len(p))
	return len(p), nil
}

// Digest returns the digest of the bytes written so far.
func (h *Hasher) Digest() Digest {
	return Digest(DigestPrefix + hex.EncodeToString(h.h.Sum(nil)))
}

// Size returns the number of bytes written so far.
func (h *Hasher) Size() int64 { return h.n }

// Verify returns nil when the bytes written so far have digest want and (when wantSize >= 0)
// size wantSize, else a *MismatchError (which wraps ErrMismatch).
func (h *Hasher) Verify(want Digest, wantSize int64) error {
	if wantSize >= 0 && h.n != wantSize {
		return &MismatchError{Want: want, WantSize: wantSize, GotSize: h.n}
	}
	if got := h.Digest(); got != want {
		return &MismatchError{Want: want, Got: got, WantSize: wantSize, GotSize: h.n}
	}
	return nil
}

// MismatchError says how the bytes given for a blob differ from what was named. It
// wraps ErrMismatch.
type MismatchError struct {
	Want     Digest // the digest named for the bytes
	Got      Digest // the bytes' digest; "" when the size differed (the stream was not hashed to its end)
	WantSize int64  // the size named for the bytes, -1 when none was
	GotSize  int64  // the bytes read; -1 when the stream went on past WantSize
}

func (e *MismatchError) Error() string {
	switch {
	case e.GotSize < 0:
		return fmt.Sprintf("blob %s: the data is longer than the %d bytes named for it (nothing stored): send the right size, or the file whose size you named", e.Want, e.WantSize)
	case e.Got == "":
		return fmt.Sprintf("blob %s: the data is %d bytes, not the %d named for it (nothing stored): send the whole file, or name its right size", e.Want, e.GotSize, e.WantSize)
	default:
		return fmt.Sprintf("blob %s: the data's sha256 is %s, not the %s named for it (nothing stored): upload the file whose digest you named", e.Want, e.Got, e.Want)
	}
}

// Unwrap makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Unwrap() error { return ErrMismatch }

// HashingReader reads from an io.Reader and hashes what passes through.
type HashingReader struct {
	r io.Reader
	h *Hasher
}

// NewHashingReader returns a reader of r that hashes every byte read.
func NewHashingReader(r io.Reader) *HashingReader {
	return &HashingReader{r: r, h: NewHasher()}
}

// Read reads from the underlying reader and hashes the bytes.
func (h *HashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// Digest returns the digest of the bytes read so far.
func (h *HashingReader) Digest() Digest { return h.h.Digest() }

// Size returns the number of bytes read so far.
func (h *HashingReader) Size() int64 { return h.h.Size() }

// Verify is Hasher.Verify for the bytes read so far.
func (h *HashingReader) Verify(want Digest, wantSize int64) error { return h.h.Verify(want, wantSize) }

// DigestReader reads r to its end and returns its digest and size (streaming).
func DigestReader(ctx context.Context, r io.Reader) (Digest, int64, error) {
	h := NewHasher()
	if _, err := CopyContext(ctx, h, r); err != nil {
		return "", 0, err
	}
	return h.Digest(), h.Size(), nil
}

// DigestFile returns the digest and size of the file at path (streaming).
func DigestFile(ctx context.Context, path string) (Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", path, err)
	}
	defer f.Close()
	d, n, err := DigestReader(ctx, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", path, err)
	}
	return d, n, nil
}

// CopyBufferSize is the buffer CopyContext uses.
const CopyBufferSize = 256 << 10

// CopyContext is io.Copy with a CopyBufferSize buffer that stops with ctx.Err() when ctx
// is done (checked between reads).
func CopyContext(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, CopyBufferSize)
	return io.CopyBuffer(dst, &ctxReader{ctx: ctx, r: src}, buf)
}

// ctxReader fails reads once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// SizeLimitReader returns a reader of r that fails with an error wrapping ErrMismatch as
// soon as r yields more than size bytes (size < 0: no limit). Put implementations use it
// so an over-long stream is stopped early rather than read to its end.
func SizeLimitReader(d Digest, r io.Reader, size int64) io.Reader {
	if size < 0 {
		return r
	}
	return &sizeLimit{d: d, r: r, left: size, size: size}
}

type sizeLimit struct {
	d    Digest
	r    io.Reader
	left int64
	size int64
}

func (s *sizeLimit) Read(p []byte) (int, error) {
	if s.left <= 0 {
		// Probe for one more byte: if there is one, the stream is longer than promised.
		var one [1]byte
		n, err := s.r.Read(one[:])
		if n > 0 {
			return 0, &MismatchError{Want: s.d, WantSize: s.size, GotSize: -1}
		}
		return 0, err
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	return n, err
}
