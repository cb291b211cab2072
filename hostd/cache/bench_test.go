package cache

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddockvm/paddock/blob"
)

// BenchmarkLink compares a disk hit (a hard link) with a miss (a fetch of 1 MiB from an
// in-memory Source, hashed and written into the disk tier, then linked), against the
// baseline of copying the same 1 MiB file, all in the same run:
//
//	go test -run '^$' -bench Link ./hostd/cache/
func BenchmarkLink(b *testing.B) {
	const size = 1 << 20
	src := newMemSource()
	data := [2][]byte{randBytes(1, size), randBytes(2, size)}
	ds := [2]blob.Digest{src.add(data[0]), src.add(data[1])}
	ctx := context.Background()
	open := func(b *testing.B) (*Cache, string) {
		cfg := testConfig(b)
		cfg.MemoryBytes = 0
		cfg.DiskBytes = size // one blob: alternating two makes every Link a miss
		c := mustOpen(b, cfg, src, newMemSink())
		return c, filepath.Join(b.TempDir(), "dst")
	}
	b.Run("copy-baseline", func(b *testing.B) {
		dir := b.TempDir()
		from := filepath.Join(dir, "from")
		os.WriteFile(from, data[0], 0o644)
		b.SetBytes(size)
		for b.Loop() {
			if err := copyFile(ctx, from, filepath.Join(dir, "to")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		c, dst := open(b)
		if _, err := c.Link(ctx, ds[0], size, dst); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		for b.Loop() {
			os.Remove(dst)
			if res, err := c.Link(ctx, ds[0], size, dst); err != nil || !res.Hit {
				b.Fatalf("Link = %+v, %v; want a hit", res, err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		c, dst := open(b)
		b.SetBytes(size)
		i := 0
		for b.Loop() {
			os.Remove(dst)
			if res, err := c.Link(ctx, ds[i%2], size, dst); err != nil || res.Hit {
				b.Fatalf("Link = %+v, %v; want a miss", res, err)
			}
			i++
		}
	})
}
