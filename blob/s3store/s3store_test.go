package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobtest"
	"github.com/paddockvm/paddock/blob/s3store"
)

var bucketN atomic.Int64

// shiftedTime is a gofakes3 clock that runs shift behind (or ahead of) the real one.
type shiftedTime struct{ shift atomic.Int64 }

func (s *shiftedTime) Now() time.Time                  { return time.Now().Add(time.Duration(s.shift.Load())) }
func (s *shiftedTime) Since(t time.Time) time.Duration { return s.Now().Sub(t) }

// fake is a gofakes3 server over real HTTP on loopback with one fresh bucket.
type fake struct {
	cfg     s3store.Config
	srv     *httptest.Server
	backend *s3mem.Backend
	clock   *shiftedTime
}

func newFake(t *testing.T) *fake { return newFakeWrapped(t, nil) }

// newFakeWrapped is newFake with wrap (when not nil) around gofakes3's handler.
func newFakeWrapped(t *testing.T, wrap func(*fake, http.Handler) http.Handler) *fake {
	t.Helper()
	f := &fake{clock: &shiftedTime{}}
	f.backend = s3mem.New(s3mem.WithTimeSource(f.clock))
	var h http.Handler = gofakes3.New(f.backend).Server()
	if wrap != nil {
		h = wrap(f, h)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	bucket := fmt.Sprintf("paddock-test-%d", bucketN.Add(1))
	if err := f.backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	f.cfg = s3store.Config{Endpoint: f.srv.URL, Bucket: bucket, Region: "us-east-1", Prefix: "blobs", AccessKey: "test", SecretKey: "test", PathStyle: true}
	return f
}

// keys lists the bucket's keys under prefix.
func (f *fake) keys(t *testing.T, prefix string) []string {
	t.Helper()
	p := gofakes3.NewPrefix(&prefix, nil)
	l, err := f.backend.ListBucket(f.cfg.Bucket, &p, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range l.Contents {
		out = append(out, c.Key)
	}
	return out
}

func fakeS3(t *testing.T) (s3store.Config, *httptest.Server) {
	f := newFake(t)
	return f.cfg, f.srv
}

func TestContract(t *testing.T) {
	blobtest.Contract(t, func(t *testing.T) blob.Store {
		cfg, _ := fakeS3(t)
		s, err := s3store.New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestEndpointDown(t *testing.T) {
	cfg, srv := fakeS3(t)
	s, err := s3store.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	d := blob.FromBytes([]byte("x"))
	_, err = s.Stat(context.Background(), d)
	if !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "cannot reach the S3 endpoint "+cfg.Endpoint) {
		t.Fatalf("Stat with the endpoint down: %v; want ErrUnavailable saying the endpoint cannot be reached", err)
	}
	t.Log(err)
	if _, err := s.Put(context.Background(), d, 1, strings.NewReader("x")); !errors.Is(err, blob.ErrUnavailable) {
		t.Errorf("Put with the endpoint down: %v; want ErrUnavailable", err)
	}

	// New against a port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg.Endpoint = "http://" + addr
	if _, err := s3store.New(context.Background(), cfg); !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("New with nothing at %s: %v; want ErrUnavailable naming the endpoint", addr, err)
	}
}

func TestMissingBucket(t *testing.T) {
	cfg, _ := fakeS3(t)
	cfg.Bucket = "no-such-bucket"
	_, err := s3store.New(context.Background(), cfg)
	if !errors.Is(err, blob.ErrInvalid) || !strings.Contains(err.Error(), "the bucket does not exist") {
		t.Fatalf("New with a missing bucket: %v; want ErrInvalid saying so", err)
	}
}

func TestValidate(t *testing.T) {
	ok := s3store.Config{Endpoint: "http://127.0.0.1:9000", Bucket: "b"}
	tests := []struct {
		name    string
		mod     func(*s3store.Config)
		wantErr string // "" = valid
	}{
		{"ok", func(*s3store.Config) {}, ""},
		{"no bucket", func(c *s3store.Config) { c.Bucket = "" }, "server.s3_bucket"},
		{"bucket with slash", func(c *s3store.Config) { c.Bucket = "b/p" }, "server.s3_prefix"},
		{"endpoint not a URL", func(c *s3store.Config) { c.Endpoint = "minio:9000" }, "Endpoint"},
		{"prefix with leading slash", func(c *s3store.Config) { c.Prefix = "/p" }, "Prefix"},
		{"access key alone", func(c *s3store.Config) { c.AccessKey = "k" }, "server.s3_secret_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, blob.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v; want ErrInvalid mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestLargeMultipart puts a blob of several upload parts, reads it back from an offset,
// and checks that a cut-off or mismatched large upload leaves no object at all (no blob,
// no temporary object).
func TestLargeMultipart(t *testing.T) {
	f := newFake(t)
	ctx := context.Background()
	s, err := s3store.New(ctx, f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40 << 20 // three 16 MiB parts
	data := blobtest.Data(42, n)
	d := blob.FromBytes(data)

	if _, err := s.Put(ctx, d, -1, &blobtest.CutReader{Data: data, Cut: 35 << 20}); !errors.Is(err, blobtest.ErrCut) {
		t.Fatalf("cut-off multipart Put: %v", err)
	}
	if _, err := s.Put(ctx, d, n-1, bytes.NewReader(data)); !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("multipart Put of more bytes than named: %v", err)
	}
	if _, err := s.Put(ctx, blob.FromBytes(nil), n, bytes.NewReader(data)); !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("multipart Put under another digest: %v", err)
	}
	if k := f.keys(t, "blobs/"); len(k) != 0 {
		t.Fatalf("objects left after failed uploads: %v", k)
	}

	info, err := s.Put(ctx, d, n, bytes.NewReader(data))
	if err != nil || info.Size != n {
		t.Fatalf("Put = %+v, %v", info, err)
	}
	rc, err := s.Open(ctx, d, n-1000)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil || !bytes.Equal(buf.Bytes(), data[n-1000:]) {
		t.Fatalf("read from offset: %d bytes, %v", buf.Len(), err)
	}
	if k := f.keys(t, "blobs/"); len(k) != 1 || k[0] != "blobs/sha256/"+d.Hex() {
		t.Fatalf("objects after a good upload: %v; want only blobs/sha256/%s", k, d.Hex())
	}
}

// TestStaleTempObjects: New deletes temporary objects older than StaleAfter and keeps
// newer ones (an upload in progress elsewhere).
func TestStaleTempObjects(t *testing.T) {
	f := newFake(t)
	put := func(key string) {
		if _, err := f.backend.PutObject(f.cfg.Bucket, key, nil, strings.NewReader("partial"), 7, nil); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.shift.Store(int64(-s3store.StaleAfter - time.Hour))
	put("blobs/tmp/old")
	f.clock.shift.Store(0)
	put("blobs/tmp/new")
	if _, err := s3store.New(context.Background(), f.cfg); err != nil {
		t.Fatal(err)
	}
	if k := f.keys(t, "blobs/tmp/"); len(k) != 1 || k[0] != "blobs/tmp/new" {
		t.Fatalf("temporary objects after New: %v; want only blobs/tmp/new", k)
	}
}
