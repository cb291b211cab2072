package cache

import (
	"context"
	"path/filepath"
	"testing"

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
