package bwshare

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newShaper(t *testing.T, cfg Config) (*Shaper, *syncBuf, *prometheus.Registry) {
	t.Helper()
	var logs syncBuf
	reg := prometheus.NewRegistry()
	s, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, &logs, reg
}

// TestMinimumsExceedCapacity: the minimums are scaled down in proportion, logged once
// per episode, and the division goes back to normal when a class ends.
func TestMinimumsExceedCapacity(t *testing.T) {
	s, logs, _ := newShaper(t, Config{Capacity: 30 * mb, Classes: map[string]Class{
		"a": {Min: 20 * mb, Weight: 1}, "b": {Min: 40 * mb, Weight: 1}}})
	ctx := context.Background()
	ra := s.Reader(ctx, "a", strings.NewReader(""))
	rb := s.Reader(ctx, "b", strings.NewReader(""))
	rb2 := s.Reader(ctx, "b", strings.NewReader("")) // a second transfer: no new episode
	got := s.Rates()
	if got["a"] != 10*mb || got["b"] != 20*mb {
		t.Errorf("rates %v, want a 10 MB/s and b 20 MB/s (minimums 20 and 40 scaled by 30/60)", got)
	}
	if n := strings.Count(logs.String(), "exceed host.bandwidth"); n != 1 {
		t.Errorf("logged the scaling %d times, want once:\n%s", n, logs)
	}
	rb.Close()
	rb2.Close()
	rb2.Close() // twice: ends the transfer once
	if got := s.Rates(); got["a"] != 30*mb || len(got) != 1 {
		t.Errorf("after b ended: rates %v, want a alone at 30 MB/s", got)
	}
	if u := s.Usage(time.Now()); u.Active != 1 {
		t.Errorf("active transfers %d, want 1", u.Active)
	}
	ra.Close()
}

// TestUnknownClass: a class that is not configured is shaped as the default class and
// logged once.
func TestUnknownClass(t *testing.T) {
	s, logs, reg := newShaper(t, Config{Capacity: 90 * mb, Classes: map[string]Class{"online": {Min: 10 * mb, Weight: 2}}})
	ctx := context.Background()
	for range 2 {
		r := s.Reader(ctx, "tenant-x", strings.NewReader("hello"))
		if r.Class() != DefaultClass {
			t.Errorf("class %q, want %q", r.Class(), DefaultClass)
		}
		if _, err := io.ReadAll(r); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	if n := strings.Count(logs.String(), "not configured"); n != 1 {
		t.Errorf("logged the unknown class %d times, want once:\n%s", n, logs)
	}
	if got := testutil.ToFloat64(s.bytes.WithLabelValues(DefaultClass)); got != 10 {
		t.Errorf("bytes of class default = %v, want 10", got)
	}
	if n, err := testutil.GatherAndCount(reg, "paddock_host_transfer_bytes_total"); err != nil || n != 2 {
		t.Errorf("transfer byte series = %d (%v), want 2 (default, online)", n, err)
	}
	for _, tc := range []struct{ tenant, class, want string }{
		{"online", "batch", "online"}, {"acme", "online", "online"}, {"acme", "batch", DefaultClass}, {"", "", DefaultClass},
	} {
		if got := s.Classify(tc.tenant, tc.class); got != tc.want {
			t.Errorf("Classify(%q, %q) = %q, want %q", tc.tenant, tc.class, got, tc.want)
		}
	}
}

// TestReaderIsLimited: reading 4 MB in a class alone under a 8 MB/s capacity takes at
// least about half a second (a lower bound: a slow machine only makes it longer).
func TestReaderIsLimited(t *testing.T) {
	s, _, _ := newShaper(t, Config{Capacity: 8 * mb})
	const n = 4_000_000
	r := s.Reader(context.Background(), "", io.LimitReader(zeros{}, n))
	start := time.Now()
	got, err := io.Copy(io.Discard, r)
	el := time.Since(start)
	r.Close()
	if err != nil || got != n {
		t.Fatalf("copied %d, %v", got, err)
	}
	t.Logf("4 MB under 8 MB/s in %v (%.1f MB/s)", el, n/el.Seconds()/mb)
	if el < 450*time.Millisecond {
		t.Errorf("4 MB took %v under a 8 MB/s cap: not limited", el)
	}
}

// TestReaderStopsWithContext: a cancelled transfer's wait ends with the context.
func TestReaderStopsWithContext(t *testing.T) {
	s, _, _ := newShaper(t, Config{Capacity: 100 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r := s.Reader(ctx, "", zeros{})
	defer r.Close()
	_, err := io.Copy(io.Discard, r)
	if err == nil || !strings.Contains(err.Error(), "bandwidth class default") {
		t.Fatalf("copy ended with %v, want the wait's error", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestUsage: the link's use is the bytes moved between samples at least a second apart.
func TestUsage(t *testing.T) {
	s, _, _ := newShaper(t, Config{Capacity: 90 * mb})
	t0 := time.Now()
	if u := s.Usage(t0); u.Rate != 0 || u.Capacity != 90*mb || u.Active != 0 {
		t.Fatalf("first sample %+v", u)
	}
	r := s.Reader(context.Background(), "", io.LimitReader(zeros{}, 3_000_000))
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatal(err)
	}
	if u := s.Usage(t0.Add(500 * time.Millisecond)); u.Rate != 0 || u.Active != 1 {
		t.Errorf("a sample within a second: %+v, want the previous rate 0 and 1 transfer", u)
	}
	r.Close()
	if u := s.Usage(t0.Add(2 * time.Second)); u.Rate != 1.5*mb || u.Active != 0 {
		t.Errorf("after 3 MB in 2 s: %+v, want 1.5 MB/s and no transfer", u)
	}
}
