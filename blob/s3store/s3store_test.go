package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobtest"
	"github.com/paddockvm/paddock/blob/s3store"
)

var bucketN atomic.Int64

// fakeS3 serves gofakes3 (in-memory backend) over real HTTP on loopback and returns a
// Config for a fresh bucket.
func fakeS3(t *testing.T) (s3store.Config, *httptest.Server) {
	t.Helper()
	backend := s3mem.New()
	faker := gofakes3.New(backend)
	srv := httptest.NewServer(faker.Server())
	t.Cleanup(srv.Close)
	bucket := fmt.Sprintf("paddock-test-%d", bucketN.Add(1))
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	return s3store.Config{Endpoint: srv.URL, Bucket: bucket, Region: "us-east-1", Prefix: "blobs", AccessKey: "test", SecretKey: "test", PathStyle: true}, srv
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
