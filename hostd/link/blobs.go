package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/blob"
)

// WriteChunkSize is the most data one WriteBlob message carries (the protocol's limit
// is 256 KiB a message).
const WriteChunkSize = 256 << 10

// Blobs is the server's blob store as the host sees it over the cluster port: the
// host cache's Source (Stat, Open) and Sink (Put). Safe for concurrent use.
type Blobs struct {
	c hostv1.HostServiceClient
	// Resumes bounds how often Open's reader reopens a cut stream where it broke
	// (default 5 in a row without progress).
	Resumes int
	// ResumeWait is the pause before the first resume, doubled for each further one
	// without progress (default 200ms).
	ResumeWait time.Duration
}

// NewBlobs returns the blob store behind c.
func NewBlobs(c hostv1.HostServiceClient) *Blobs {
	return &Blobs{c: c, Resumes: 5, ResumeWait: 200 * time.Millisecond}
}

// Stat returns the blob's size, or an error wrapping blob.ErrNotFound.
func (b *Blobs) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	if err := d.Validate(); err != nil {
		return blob.Info{}, err
	}
	r, err := b.c.StatBlob(ctx, &hostv1.StatBlobRequest{Digest: string(d)})
	if err != nil {
		return blob.Info{}, fmt.Errorf("asking the server for blob %s: %w", d, blobError(err))
	}
	return blob.Info{Digest: d, Size: r.GetSize()}, nil
}

// Open streams the blob from offset. A stream cut by a transient error (the server
// restarting, the connection dropping) is reopened where it broke, up to Resumes times
// in a row without progress; errors that a retry cannot fix (not found, invalid) end
// it at once. The caller closes the reader.
func (b *Blobs) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: reading blob %s from offset %d: the offset is negative", blob.ErrInvalid, d, offset)
	}
	r := &blobReader{b: b, d: d, off: offset}
	r.ctx, r.cancel = context.WithCancel(ctx)
	if err := r.open(); err != nil {
		r.cancel()
		return nil, err
	}
	// The first message tells whether the server has the blob at all: fail here, not
	// at the first Read.
	if err := r.fill(); err != nil && err != io.EOF {
		r.cancel()
		return nil, err
	}
	return r, nil
}

// blobReader reads a ReadBlob stream, reopening it where it broke.
type blobReader struct {
	b       *Blobs
	d       blob.Digest
	ctx     context.Context
	cancel  context.CancelFunc
	off     int64 // the offset of the next byte
	st      hostv1.HostService_ReadBlobClient
	scancel context.CancelFunc
	buf     []byte
	fails   int // consecutive failed attempts without a byte read
	done    bool
}

func (r *blobReader) open() error {
	sctx, cancel := context.WithCancel(r.ctx)
	st, err := r.b.c.ReadBlob(sctx, &hostv1.ReadBlobRequest{Digest: string(r.d), Offset: r.off})
	if err != nil {
		cancel()
		return fmt.Errorf("reading blob %s from the server at offset %d: %w", r.d, r.off, blobError(err))
	}
	r.st, r.scancel = st, cancel
	return nil
}

func (r *blobReader) Read(p []byte) (int, error) {
	if err := r.fill(); err != nil {
		return 0, err
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	r.off += int64(n)
	return n, nil
}

// fill receives until buf holds bytes, the blob ends (io.EOF) or an error that no
// resume fixes.
func (r *blobReader) fill() error {
	for len(r.buf) == 0 {
		if r.done {
			return io.EOF
		}
		if r.st == nil {
			if err := r.open(); err != nil {
				if !r.retry(err) {
					return err
				}
				continue
			}
		}
		ch, err := r.st.Recv()
		if err == io.EOF {
			r.done = true
			return io.EOF
		}
		if err != nil {
			r.scancel()
			r.st = nil
			err = fmt.Errorf("reading blob %s from the server at offset %d: %w", r.d, r.off, blobError(err))
			if !r.retry(err) {
				return err
			}
			continue
		}
		r.buf = ch.GetData()
		if len(r.buf) > 0 {
			r.fails = 0
		}
	}
	return nil
}

// retry says whether to reopen the stream after err, waiting first.
func (r *blobReader) retry(err error) bool {
	if !errors.Is(err, blob.ErrUnavailable) || r.ctx.Err() != nil || r.fails >= r.b.Resumes {
		return false
	}
	wait := r.b.ResumeWait << r.fails
	r.fails++
	select {
	case <-r.ctx.Done():
		return false
	case <-time.After(wait):
		return true
	}
}

func (r *blobReader) Close() error {
	r.cancel()
	return nil
}

// Put uploads r (size bytes, or -1 when unknown) as blob d: a header, then chunks of at
// most WriteChunkSize. The server verifies digest and size before it stores anything;
// a blob it holds already is acknowledged at once.
func (b *Blobs) Put(ctx context.Context, d blob.Digest, size int64, r io.Reader) error {
	if err := d.Validate(); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := b.c.WriteBlob(sctx)
	if err != nil {
		return fmt.Errorf("uploading blob %s to the server: %w", d, blobError(err))
	}
	check := func(ref *hostv1.BlobRef) error {
		if ref.GetDigest() != string(d) || (size >= 0 && ref.GetSize() != size) {
			return fmt.Errorf("%w: uploading blob %s (%d bytes): the server acknowledged %s (%d bytes)", blob.ErrMismatch, d, size, ref.GetDigest(), ref.GetSize())
		}
		return nil
	}
	fail := func(err error) error {
		if errors.Is(err, io.EOF) { // the server ended the stream: its answer says why
			ref, rerr := st.CloseAndRecv()
			if rerr == nil { // it answered early: it holds the blob already
				return check(ref)
			}
			err = rerr
		}
		return fmt.Errorf("uploading blob %s to the server: %w", d, blobError(err))
	}
	if err := st.Send(&hostv1.WriteBlobRequest{Header: &hostv1.BlobRef{Digest: string(d), Size: size}}); err != nil {
		return fail(err)
	}
	buf := make([]byte, WriteChunkSize)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := st.Send(&hostv1.WriteBlobRequest{Data: append([]byte(nil), buf[:n]...)}); err != nil {
				return fail(err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("uploading blob %s: reading it: %w", d, rerr)
		}
	}
	ref, err := st.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("uploading blob %s to the server: %w", d, blobError(err))
	}
	return check(ref)
}

// blobError maps a gRPC status from the server's blob RPCs to the blob error classes,
// keeping the server's message.
func blobError(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w: %v", blob.ErrUnavailable, err)
	}
	var class error
	switch s.Code() {
	case codes.NotFound:
		class = blob.ErrNotFound
	case codes.InvalidArgument, codes.OutOfRange, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented, codes.FailedPrecondition:
		class = blob.ErrInvalid // FailedPrecondition: the server has no blob store
	case codes.DataLoss:
		class = blob.ErrMismatch
	case codes.ResourceExhausted:
		class = blob.ErrTooLarge
	case codes.Canceled:
		return context.Canceled
	default: // Unavailable, DeadlineExceeded, Internal, Unknown, Aborted
		class = blob.ErrUnavailable
	}
	return fmt.Errorf("%w: %s", class, s.Message())
}
