package cache

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
)

// TestLargest: the cache summary lists the largest blobs first, bounded, across tiers.
func TestLargest(t *testing.T) {
	src := newMemSource()
	c := mustOpen(t, testConfig(t), src, newMemSink())
	ctx := context.Background()
	var ds []blob.Digest
	for i, n := range []int{1000, 300_000, 50_000, 200_000} {
		d := src.add(randBytes(int64(i+10), n))
		if _, err := c.Link(ctx, d, int64(n), filepath.Join(t.TempDir(), "x")); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	got := c.Largest(3)
	want := []blob.Digest{ds[1], ds[3], ds[2]}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("Largest(3) = %v; want %v (largest first)", got, want)
	}
	if all := c.Largest(100); len(all) != 4 {
		t.Fatalf("Largest(100) = %d digests; want all 4", len(all))
	}
	if none := c.Largest(0); len(none) != 0 {
		t.Fatalf("Largest(0) = %v; want none", none)
	}
}

// TestSummaryChanges: a blob being fetched is in the summary from the start of its
// download, and Changes signals when it starts, when it lands and when it is evicted,
// so the host daemon can send the summary at once instead of with its next status.
func TestSummaryChanges(t *testing.T) {
	src := newMemSource()
	src.gate = make(chan struct{})
	cfg := testConfig(t)
	cfg.MemoryBytes, cfg.DiskBytes = 0, 300_000 // room for one of the two blobs
	c := mustOpen(t, cfg, src, newMemSink())
	ctx := context.Background()
	a, b := src.add(randBytes(1, 200_000)), src.add(randBytes(2, 200_000))
	drain := func() {
		select {
		case <-c.Changes():
		default:
		}
	}
	changed := func(what string) {
		t.Helper()
		select {
		case <-c.Changes():
		case <-time.After(time.Minute):
			t.Fatalf("no signal on Changes after %s", what)
		}
	}
	drain()
	done := make(chan error, 1)
	go func() {
		_, err := c.Link(ctx, a, 200_000, filepath.Join(t.TempDir(), "a"))
		done <- err
	}()
	changed("a download started")
	if got := c.Largest(10); len(got) != 1 || got[0] != a {
		t.Fatalf("Largest while %s downloads = %v; want it listed", a, got)
	}
	close(src.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	changed("a blob landed")
	if got := c.Largest(10); len(got) != 1 || got[0] != a {
		t.Fatalf("Largest after the download = %v; want [%s]", got, a)
	}
	drain()
	if _, err := c.Link(ctx, b, 200_000, filepath.Join(t.TempDir(), "b")); err != nil {
		t.Fatal(err)
	}
	changed("an eviction")
	if got := c.Largest(10); len(got) != 1 || got[0] != b {
		t.Fatalf("Largest after %s evicted %s = %v; want [%s]", b, a, got, b)
	}
	drain()
	src.corrupt[a] = true // the next download of a fails: it leaves the summary
	if _, err := c.Link(ctx, a, 200_000, filepath.Join(t.TempDir(), "a2")); err == nil {
		t.Fatal("linking a corrupt blob succeeded")
	}
	changed("a failed download")
	if got := c.Largest(10); slices.Contains(got, a) {
		t.Fatalf("Largest after a failed download of %s = %v; want it gone", a, got)
	}
}
