package blob_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobtest"
)

const benchSize = 64 << 20

// rawCopy is the baseline: io.Copy of the same stream into a new file, fsync, close.
func rawCopy(b *testing.B, dir string, r io.Reader) {
	f, err := os.CreateTemp(dir, "raw")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// mbps turns bytes and a duration into MB/s.
func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

// BenchmarkFSPut puts a 64 MiB blob (stream → hash → temp file → fsync → rename) and, in
// the same iterations, copies the same stream to a plain file (io.Copy + fsync) as the
// baseline. Metrics: raw-MB/s, fs-MB/s and fs/raw (the store's share of raw speed).
//
//	go test -run '^$' -bench FSPut -benchtime 5x ./blob/
func BenchmarkFSPut(b *testing.B) {
	dir := b.TempDir()
	s, err := blob.OpenFS(filepath.Join(dir, "store"))
	if err != nil {
		b.Fatal(err)
	}
	d := blobtest.StreamDigest(b, 1, benchSize)
	ctx := context.Background()
	var raw, fs time.Duration
	for b.Loop() {
		t0 := time.Now()
		rawCopy(b, dir, blobtest.NewStream(1, benchSize))
		t1 := time.Now()
		if _, err := s.Put(ctx, d, benchSize, blobtest.NewStream(1, benchSize)); err != nil {
			b.Fatal(err)
		}
		fs += time.Since(t1)
		raw += t1.Sub(t0)
		b.StopTimer()
		if err := s.Delete(ctx, d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	n := int64(b.N) * benchSize
	b.ReportMetric(mbps(n, raw), "raw-MB/s")
	b.ReportMetric(mbps(n, fs), "fs-MB/s")
	b.ReportMetric(raw.Seconds()/fs.Seconds(), "fs/raw")
}
