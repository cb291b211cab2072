package cache

import (
	"context"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddockvm/paddock/blob"
)

// refCache is the obviously-correct model the trace test checks the cache against: a
// byte budget, and on a miss an O(n) scan per eviction for the resident blob with the
// smallest score: its last reference (LRU), or its CRF Σ (1/2)^(λ·(now − tᵢ)) computed
// from the full list of its references since it entered (LRFU). Ties: the older last
// reference, then the smaller digest.
type refCache struct {
	lrfu   bool
	lambda float64
	budget int64
	used   int64
	res    map[blob.Digest]*refEntry
}

type refEntry struct {
	size int64
	refs []int64
}

func (r *refCache) score(e *refEntry, now int64) float64 {
	if !r.lrfu {
		return float64(e.refs[len(e.refs)-1])
	}
	var crf float64
	for _, t := range e.refs {
		crf += math.Pow(0.5, r.lambda*float64(now-t))
	}
	return crf
}

// access references d (size bytes) at now and reports whether it was a hit.
func (r *refCache) access(d blob.Digest, size, now int64) bool {
	if e, ok := r.res[d]; ok {
		e.refs = append(e.refs, now)
		return true
	}
	for r.used+size > r.budget {
		var victim blob.Digest
		var vs float64
		for k, e := range r.res {
			s := r.score(e, now)
			if victim == "" || s < vs ||
				s == vs && (e.refs[len(e.refs)-1] < r.res[victim].refs[len(r.res[victim].refs)-1] ||
					e.refs[len(e.refs)-1] == r.res[victim].refs[len(r.res[victim].refs)-1] && k < victim) {
				victim, vs = k, s
			}
		}
		r.used -= r.res[victim].size
		delete(r.res, victim)
	}
	r.res[d] = &refEntry{size: size, refs: []int64{now}}
	r.used += size
	return false
}

// TestTraceHitRatio reads a Zipf-distributed sequence of blobs (of varied sizes) through
// a real Cache, whose disk budget is a tenth of the working set, and checks every
// access's hit or miss, for LRU and for LRFU with λ = 0.001 and 0.5, against refCache.
// It prints the hit ratios.
func TestTraceHitRatio(t *testing.T) {
	const (
		blobs  = 400
		reads  = 4000
		seed   = 20261201
		budget = 100 << 10
	)
	src := newMemSource()
	digests := make([]blob.Digest, blobs)
	sizes := make([]int64, blobs)
	var working int64
	for i := range digests {
		size := 512 + (i*7919)%3584 // 512 B … 4 KiB
		digests[i] = src.add(randBytes(int64(i), size))
		sizes[i] = int64(size)
		working += int64(size)
	}
	zipf := rand.NewZipf(rand.New(rand.NewSource(seed)), 1.1, 1, blobs-1)
	trace := make([]int, reads)
	for i := range trace {
		trace[i] = int(zipf.Uint64())
	}
	t.Logf("%d reads of %d blobs (%d bytes), Zipf s=1.1, disk budget %d bytes", reads, blobs, working, budget)
	for _, tc := range []struct {
		name   string
		policy string
		lambda float64
	}{
		{"lru", PolicyLRU, 0},
		{"lrfu-0.001", PolicyLRFU, 0.001},
		{"lrfu-0.5", PolicyLRFU, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MemoryBytes = 0 // hits come from the disk tier only
			cfg.DiskBytes = budget
			cfg.Policy, cfg.Lambda = tc.policy, tc.lambda
			c := mustOpen(t, cfg, src, newMemSink())
			ref := &refCache{lrfu: tc.policy == PolicyLRFU, lambda: tc.lambda, budget: budget, res: map[blob.Digest]*refEntry{}}
			dst := filepath.Join(t.TempDir(), "dst")
			hits, refHits := 0, 0
			for i, k := range trace {
				res, err := c.Link(context.Background(), digests[k], sizes[k], dst)
				if err != nil {
					t.Fatalf("read %d (blob %d): %v", i, k, err)
				}
				os.Remove(dst)
				want := ref.access(digests[k], sizes[k], int64(i+1))
				if res.Hit != want {
					t.Fatalf("read %d (blob %d): cache hit = %v, reference hit = %v", i, k, res.Hit, want)
				}
				if res.Hit {
					hits++
				}
				if want {
					refHits++
				}
			}
			if st := c.Stats(); st.DiskBytes > budget || st.DiskBytes != ref.used {
				t.Errorf("disk tier holds %d bytes; reference %d, budget %d", st.DiskBytes, ref.used, budget)
			}
			if hits != refHits {
				t.Fatalf("hits = %d; reference %d", hits, refHits)
			}
			t.Logf("%s: hit ratio %.4f (%d of %d), equal to the reference's", tc.name, float64(hits)/reads, hits, reads)
		})
	}
}
