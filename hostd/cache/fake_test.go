package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/paddockvm/paddock/blob"
)

// memSource is a Source over a map that counts what it serves. It can corrupt blobs,
// cut every response after cut bytes, and hold every Open until gate is closed.
type memSource struct {
	mu      sync.Mutex
	blobs   map[blob.Digest][]byte
	corrupt map[blob.Digest]bool
	cut     int64
	gate    chan struct{}
	opens   atomic.Int64
	served  atomic.Int64
}

func newMemSource() *memSource {
	return &memSource{blobs: map[blob.Digest][]byte{}, corrupt: map[blob.Digest]bool{}}
}

func (s *memSource) add(data []byte) blob.Digest {
	d := blob.FromBytes(data)
	s.mu.Lock()
	s.blobs[d] = data
	s.mu.Unlock()
	return d
}

func (s *memSource) Stat(_ context.Context, d blob.Digest) (blob.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return blob.Info{}, fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	return blob.Info{Digest: d, Size: int64(len(b))}, nil
}

func (s *memSource) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	s.opens.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	b, ok := s.blobs[d]
	bad := s.corrupt[d]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	if offset < 0 || offset > int64(len(b)) {
		return nil, fmt.Errorf("%w: offset %d", blob.ErrInvalid, offset)
	}
	if bad {
		b = bytes.Clone(b)
		b[len(b)/2] ^= 0xff
	}
	var r io.Reader = bytes.NewReader(b[offset:])
	if s.cut > 0 {
		r = io.MultiReader(io.LimitReader(r, s.cut), errReader{errors.New("connection reset (test)")})
	}
	return io.NopCloser(&countReader{r: r, n: &s.served}), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// memSink is a Sink over a map; it fails while fail is set.
type memSink struct {
	mu   sync.Mutex
	got  map[blob.Digest][]byte
	fail atomic.Bool
	puts atomic.Int64
}

func newMemSink() *memSink { return &memSink{got: map[blob.Digest][]byte{}} }

func (s *memSink) Put(_ context.Context, d blob.Digest, size int64, r io.Reader) error {
	s.puts.Add(1)
	if s.fail.Load() {
		return fmt.Errorf("%w: server unreachable (test)", blob.ErrUnavailable)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if blob.FromBytes(b) != d || int64(len(b)) != size {
		return fmt.Errorf("%w: sink got other bytes for %s", blob.ErrMismatch, d)
	}
	s.mu.Lock()
	s.got[d] = b
	s.mu.Unlock()
	return nil
}

func (s *memSink) has(d blob.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.got[d]
	return ok
}

// randBytes returns n pseudo-random bytes from seed.
func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// testConfig returns a config over a fresh directory.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "cache")
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

// testWriter writes log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// mustOpen opens a cache and closes it when the test ends.
func mustOpen(t testing.TB, cfg Config, src Source, sink Sink) *Cache {
	t.Helper()
	c, err := Open(cfg, src, sink, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dirNames lists the file names under dir (recursively), relative to it.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}
