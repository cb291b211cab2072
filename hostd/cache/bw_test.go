package cache

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/hostd/bwshare"
)

// seeded returns n pseudo-random bytes from seed as a stream (no n bytes in memory).
func seeded(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// blobServer serves a blob.FS in a temporary directory over the blob HTTP API on
// loopback, holding one blob of size bytes per seed; it returns the server's URL and
// the blobs' digests.
func blobServer(t *testing.T, size int64, seeds ...uint64) (string, []blob.Digest) {
	t.Helper()
	st, err := blob.OpenFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ds []blob.Digest
	for _, s := range seeds {
		h := blob.NewHasher()
		if _, err := io.Copy(h, seeded(s, size)); err != nil {
			t.Fatal(err)
		}
		d := h.Digest()
		if _, err := st.Put(ctx, d, size, seeded(s, size)); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return serveStore(t, st), ds
}

// serveStore serves st over the blob HTTP API on loopback until the test ends.
func serveStore(t *testing.T, st blob.Store) string {
	t.Helper()
	h := blobhttp.NewHandler(st, blobhttp.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	mux := http.NewServeMux()
	mux.Handle(blobhttp.Prefix, h)
	mux.Handle(blobhttp.Prefix+"/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// sample is the bytes of each class at one moment.
type sample struct {
	at    time.Time
	bytes []int64
}

// bytesAt returns class i's bytes at time at, interpolated between samples.
func bytesAt(ss []sample, i int, at time.Time) float64 {
	for k := 1; k < len(ss); k++ {
		if !ss[k].at.Before(at) {
			a, b := ss[k-1], ss[k]
			f := float64(at.Sub(a.at)) / float64(b.at.Sub(a.at))
			return float64(a.bytes[i]) + f*float64(b.bytes[i]-a.bytes[i])
		}
	}
	return float64(ss[len(ss)-1].bytes[i])
}

// rateOver returns class i's bytes/s over [from, to].
func rateOver(ss []sample, i int, from, to time.Time) float64 {
	return (bytesAt(ss, i, to) - bytesAt(ss, i, from)) / to.Sub(from).Seconds()
}

// TestBandwidthShares: three concurrent 256 MiB fetches into the host cache over real
// HTTP on loopback from the blob server, in classes with minimums 10, 20 and 30 MB/s and
// equal weights, under a 90 MB/s host cap. While all three run, each class gets at
// least 95 % of its minimum (its share is minimum + 10 MB/s) and the total at least
// 90 % of the cap; when the first ends, the two others speed up within one second.
// Throughputs are bytes over windows of the run, sampled every 50 ms.
func TestBandwidthShares(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 768 MiB over loopback (about 10 s); run without -short")
	}
	const size = 256 << 20
	const capacity = 90e6
	names := []string{"a", "b", "c"}
	mins := []float64{10e6, 20e6, 30e6}
	url, ds := blobServer(t, size, 1, 2, 3)

	cfg := testConfig(t)
	cfg.DiskBytes, cfg.MemoryBytes = 1<<30, 0
	classes := map[string]bwshare.Class{}
	for i, n := range names {
		classes[n] = bwshare.Class{Min: mins[i], Weight: 1}
	}
	sh, err := bwshare.New(bwshare.Config{Capacity: capacity, Classes: classes}, cfg.Logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, sink := Shaped(HTTPSource{Client: &blobhttp.Client{BaseURL: url}}, newMemSink(), sh)
	c := mustOpen(t, cfg, src, sink)

	done := make(chan struct{})
	var last time.Time // set before done is closed
	var ss []sample
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			s := sample{at: time.Now()}
			for _, n := range names {
				s.bytes = append(s.bytes, sh.Bytes(n))
			}
			ss = append(ss, s)
			select {
			case <-done:
				if s.at.Before(last) {
					continue // one more sample, after the last byte
				}
				return
			case <-tk.C:
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Link(bwshare.WithClass(ctx, n), ds[i], size, filepath.Join(out, n))
		}()
	}
	wg.Wait()
	last = time.Now()
	close(done)
	sampling.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("fetch in class %s: %v", names[i], err)
		}
	}
	start := ss[0].at
	// Each class's end: the first sample with all its bytes.
	ends := make([]time.Time, len(names))
	first := -1
	for i := range names {
		for _, s := range ss {
			if s.bytes[i] >= size {
				ends[i] = s.at
				break
			}
		}
		if first < 0 || ends[i].Before(ends[first]) {
			first = i
		}
	}
	t.Logf("fetches ended after %v (a), %v (b), %v (c)", ends[0].Sub(start).Round(time.Millisecond), ends[1].Sub(start).Round(time.Millisecond), ends[2].Sub(start).Round(time.Millisecond))

	// All three running: from 0.5 s after the start to 0.25 s before the first end.
	from, to := start.Add(500*time.Millisecond), ends[first].Add(-250*time.Millisecond)
	if to.Sub(from) < time.Second {
		t.Fatalf("the first fetch ended %v after the start: too soon to measure shares (is the limiter shaping at all?)", ends[first].Sub(start))
	}
	var total float64
	for i, n := range names {
		r := rateOver(ss, i, from, to)
		total += r
		t.Logf("class %s (min %.0f MB/s, share %.0f MB/s): %.1f MB/s = %.0f %% of its minimum, over %v",
			n, mins[i]/1e6, (mins[i]+(capacity-60e6)/3)/1e6, r/1e6, 100*r/mins[i], to.Sub(from).Round(time.Millisecond))
		if r < 0.95*mins[i] {
			t.Errorf("class %s got %.1f MB/s, less than 95 %% of its minimum %.0f MB/s", n, r/1e6, mins[i]/1e6)
		}
	}
	t.Logf("total %.1f MB/s = %.0f %% of the %.0f MB/s cap", total/1e6, 100*total/capacity, capacity/1e6)
	if total < 0.9*capacity {
		t.Errorf("total %.1f MB/s, less than 90 %% of the cap", total/1e6)
	}
	// The first end: the others speed up within one second.
	te := ends[first]
	for i, n := range names {
		if i == first {
			continue
		}
		if ends[i].Before(te.Add(time.Second)) {
			t.Errorf("class %s ended within a second of class %s: cannot see it speed up", n, names[first])
			continue
		}
		before, after := rateOver(ss, i, te.Add(-time.Second), te), rateOver(ss, i, te, te.Add(time.Second))
		t.Logf("class %s: %.1f MB/s in the second before class %s ended, %.1f MB/s in the second after (×%.2f)", n, before/1e6, names[first], after/1e6, after/before)
		if after < 1.2*before {
			t.Errorf("class %s did not speed up within one second of class %s's end: %.1f then %.1f MB/s", n, names[first], before/1e6, after/1e6)
		}
	}
	for i, n := range names {
		checkDigest(t, filepath.Join(out, n), ds[i])
	}
}

// checkDigest fails t unless the file at path is blob d.
func checkDigest(t *testing.T, path string, d blob.Digest) {
	t.Helper()
	if err := verifyFile(context.Background(), path, d, -1); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
