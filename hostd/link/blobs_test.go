package link_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/hostd/link"
)

// blobServer serves the host blob RPCs from a real filesystem blob store. cutAfter > 0
// makes each ReadBlob stream fail with Unavailable after that many chunks (a dropped
// connection), so readers must resume; cutAfter < 0 fails them before the first chunk.
type blobServer struct {
	hostv1.UnimplementedHostServiceServer
	store *blob.FS

	mu        sync.Mutex // guards the fields below
	cutAfter  int
	reads     []int64 // offsets ReadBlob was called with
	maxChunk  int
	headerOK  bool
	writeSeen int
}

func (s *blobServer) StatBlob(ctx context.Context, r *hostv1.StatBlobRequest) (*hostv1.BlobRef, error) {
	info, err := s.store.Stat(ctx, blob.Digest(r.GetDigest()))
	if errors.Is(err, blob.ErrNotFound) {
		return nil, status.Error(codes.NotFound, err.Error())
	} else if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &hostv1.BlobRef{Digest: string(info.Digest), Size: info.Size}, nil
}

func (s *blobServer) ReadBlob(r *hostv1.ReadBlobRequest, st hostv1.HostService_ReadBlobServer) error {
	s.mu.Lock()
	s.reads = append(s.reads, r.GetOffset())
	cut := s.cutAfter
	s.mu.Unlock()
	rc, err := s.store.Open(st.Context(), blob.Digest(r.GetDigest()), r.GetOffset())
	if errors.Is(err, blob.ErrNotFound) {
		return status.Error(codes.NotFound, err.Error())
	} else if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer rc.Close()
	buf := make([]byte, 1000)
	for i := 0; ; i++ {
		if cut > 0 && i == cut || cut < 0 {
			return status.Error(codes.Unavailable, "connection dropped (test)")
		}
		n, err := rc.Read(buf)
		if n > 0 {
			if err := st.Send(&hostv1.Chunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
	}
}

func (s *blobServer) WriteBlob(st hostv1.HostService_WriteBlobServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	s.mu.Lock()
	s.headerOK = h != nil && len(first.GetData()) == 0
	s.mu.Unlock()
	pr, pw := io.Pipe()
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				pw.CloseWithError(err)
				return
			}
			s.mu.Lock()
			s.maxChunk = max(s.maxChunk, len(m.GetData()))
			s.writeSeen += len(m.GetData())
			if m.GetHeader() != nil {
				s.headerOK = false
			}
			s.mu.Unlock()
			pw.Write(m.GetData())
		}
	}()
	info, err := s.store.Put(st.Context(), blob.Digest(h.GetDigest()), h.GetSize(), pr)
	pr.CloseWithError(errors.New("done"))
	if errors.Is(err, blob.ErrMismatch) {
		return status.Error(codes.InvalidArgument, err.Error())
	} else if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return st.SendAndClose(&hostv1.BlobRef{Digest: string(info.Digest), Size: info.Size})
}

func serve(t *testing.T) (*blobServer, *link.Blobs) {
	t.Helper()
	fs, err := blob.OpenFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := &blobServer{store: fs}
	gs := grpc.NewServer()
	hostv1.RegisterHostServiceServer(gs, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	b := link.NewBlobs(hostv1.NewHostServiceClient(cc))
	b.ResumeWait = 0
	return srv, b
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBlobsPutStatOpen(t *testing.T) {
	srv, b := serve(t)
	ctx := context.Background()
	data := randBytes(t, 3*link.WriteChunkSize+17)
	d := blob.FromBytes(data)

	if _, err := b.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat of a missing blob: %v, want ErrNotFound", err)
	}
	if _, err := b.Open(ctx, d, 0); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Open of a missing blob: %v, want ErrNotFound at Open", err)
	}
	if err := b.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	if !srv.headerOK || srv.maxChunk > link.WriteChunkSize || srv.writeSeen != len(data) {
		t.Errorf("upload: header first and alone %v, largest chunk %d (limit %d), %d bytes sent of %d", srv.headerOK, srv.maxChunk, link.WriteChunkSize, srv.writeSeen, len(data))
	}
	srv.mu.Unlock()
	info, err := b.Stat(ctx, d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Stat: %v %v", info, err)
	}
	rc, err := b.Open(ctx, d, 100)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data[100:]) {
		t.Fatalf("Open from 100: %d bytes, %v", len(got), err)
	}

	// A lying upload: the server refuses it, nothing stored.
	bad := blob.FromBytes([]byte("something else"))
	if err := b.Put(ctx, bad, int64(len(data)), bytes.NewReader(data)); err == nil {
		t.Fatal("Put with the wrong digest succeeded")
	}
	if _, err := b.Stat(ctx, bad); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after a refused upload: %v", err)
	}
	if _, err := b.Stat(ctx, "sha256:nope"); !errors.Is(err, blob.ErrInvalid) {
		t.Fatalf("a malformed digest: %v", err)
	}
}

// TestBlobsOpenResumes: a stream cut every few chunks is reopened where it broke, and
// the bytes come out whole; with resumes exhausted the error is ErrUnavailable.
func TestBlobsOpenResumes(t *testing.T) {
	srv, b := serve(t)
	ctx := context.Background()
	data := randBytes(t, 10_500)
	d := blob.FromBytes(data)
	if _, err := srv.store.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.cutAfter = 3
	srv.mu.Unlock()
	rc, err := b.Open(ctx, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through cuts: %d of %d bytes, %v", len(got), len(data), err)
	}
	srv.mu.Lock()
	reads := append([]int64(nil), srv.reads...)
	srv.mu.Unlock()
	want := []int64{0, 3000, 6000, 9000}
	if len(reads) != len(want) {
		t.Fatalf("ReadBlob offsets %v, want %v", reads, want)
	}
	for i := range want {
		if reads[i] != want[i] {
			t.Fatalf("ReadBlob offsets %v, want %v", reads, want)
		}
	}

	// A server that cuts every stream before its first byte: the resumes run out.
	rc, err = b.Open(ctx, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	srv.cutAfter, srv.reads = -1, nil
	srv.mu.Unlock()
	_, err = io.ReadAll(rc)
	rc.Close()
	srv.mu.Lock()
	n := len(srv.reads)
	srv.mu.Unlock()
	if !errors.Is(err, blob.ErrUnavailable) || n != b.Resumes {
		t.Fatalf("a server that always cuts: %v after %d reopens, want ErrUnavailable after %d", err, n, b.Resumes)
	}
}

// TestBlobsPutOfAHeldBlob: the server answers a blob it holds at once and ends the
// stream while the host still sends; Put takes that answer as success (it reported
// "blob store unavailable: EOF" before, which failed every task whose output the
// server already had, e.g. a decompress giving back an uploaded input).
func TestBlobsPutOfAHeldBlob(t *testing.T) {
	_, b := serve(t)
	ctx := context.Background()
	data := randBytes(t, 32<<20) // far more than gRPC's flow-control window
	d := blob.FromBytes(data)
	if err := b.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := b.Put(ctx, d, int64(len(data)), bytes.NewReader(data)); err != nil {
			t.Fatalf("Put %d of a blob the server holds: %v", i+2, err)
		}
	}
}
