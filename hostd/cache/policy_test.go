package cache

import (
	"fmt"
	"math"
	"testing"

	"pgregory.net/rapid"
)

func TestLRUOrder(t *testing.T) {
	p := NewLRU()
	for i, k := range []string{"a", "b", "c", "a"} {
		p.Touch(k, int64(i+1))
	}
	if v, ok := p.Victim(nil); !ok || v != "b" {
		t.Fatalf("Victim = %q, %v; want b (a was touched again)", v, ok)
	}
	if v, _ := p.Victim(func(k string) bool { return k == "b" }); v != "c" {
		t.Fatalf("Victim skipping b = %q; want c", v)
	}
	p.Remove("b")
	p.Remove("nope")
	if v, _ := p.Victim(nil); v != "c" || p.Len() != 2 {
		t.Fatalf("after Remove(b): Victim = %q, Len = %d; want c, 2", v, p.Len())
	}
	if _, ok := p.Victim(func(string) bool { return true }); ok {
		t.Fatal("Victim with everything skipped returned a key")
	}
	if _, ok := NewLRU().Victim(nil); ok {
		t.Fatal("Victim of an empty policy returned a key")
	}
}

func TestLRFUCRF(t *testing.T) {
	const lambda = 0.5
	p := NewLRFU(lambda)
	refs := []int64{1, 4, 5}
	for _, now := range refs {
		p.Touch("a", now)
	}
	p.Touch("b", 6)
	var want float64
	for _, ti := range refs {
		want += math.Pow(0.5, lambda*float64(9-ti))
	}
	if got := p.CRF("a", 9); math.Abs(got-want) > 1e-12 {
		t.Fatalf("CRF(a, 9) = %v; want %v", got, want)
	}
	// a: 2^-4 + 2^-2.5 + 2^-2 ≈ 0.489; b: 2^-1.5 ≈ 0.354: b goes first.
	if v, _ := p.Victim(nil); v != "b" {
		t.Fatalf("Victim = %q; want b (CRF %v < %v)", v, p.CRF("b", 9), p.CRF("a", 9))
	}
}

// TestLRFUSpectrum checks the ends of the spectrum on random reference strings: λ = 1
// picks what LRU picks, λ = 0 the least frequently used key (ties: the older last
// reference).
func TestLRFUSpectrum(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		keys := rapid.SliceOfN(rapid.IntRange(0, 9), 1, 200).Draw(t, "refs")
		lru, l1, l0 := NewLRU(), NewLRFU(1), NewLRFU(0)
		count := map[string]int{}
		last := map[string]int64{}
		for i, k := range keys {
			key := fmt.Sprint(k)
			now := int64(i + 1)
			lru.Touch(key, now)
			l1.Touch(key, now)
			l0.Touch(key, now)
			count[key]++
			last[key] = now
			a, _ := lru.Victim(nil)
			b, _ := l1.Victim(nil)
			if a != b {
				t.Fatalf("after %d refs: LRU evicts %s, LRFU(λ=1) %s", i+1, a, b)
			}
			want := ""
			for k := range count {
				if want == "" || count[k] < count[want] || count[k] == count[want] && last[k] < last[want] {
					want = k
				}
			}
			if got, _ := l0.Victim(nil); got != want {
				t.Fatalf("after %d refs: LFU evicts %s (%d refs), LRFU(λ=0) %s (%d refs)", i+1, want, count[want], got, count[got])
			}
		}
	})
}

// TestPolicyVictimSkip checks Victim with pinned keys against a scan, under random
// touches and removes, for both policies.
func TestPolicyVictimSkip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lambda := rapid.Float64Range(0, 1).Draw(t, "lambda")
		lru, lrfu := NewLRU(), NewLRFU(lambda)
		order := map[string]int64{} // LRU: last touch
		steps := rapid.IntRange(1, 300).Draw(t, "steps")
		for i := 1; i <= steps; i++ {
			key := fmt.Sprint(rapid.IntRange(0, 15).Draw(t, "key"))
			if rapid.IntRange(0, 4).Draw(t, "op") == 0 {
				lru.Remove(key)
				lrfu.Remove(key)
				delete(order, key)
			} else {
				lru.Touch(key, int64(i))
				lrfu.Touch(key, int64(i))
				order[key] = int64(i)
			}
			pinned := map[string]bool{}
			for k := range order {
				pinned[k] = rapid.Bool().Draw(t, "pin")
			}
			skip := func(k string) bool { return pinned[k] }
			if lru.Len() != len(order) || lrfu.Len() != len(order) {
				t.Fatalf("Len = %d, %d; want %d", lru.Len(), lrfu.Len(), len(order))
			}
			wantLRU, wantLRFU := "", ""
			for k := range order {
				if pinned[k] {
					continue
				}
				if wantLRU == "" || order[k] < order[wantLRU] {
					wantLRU = k
				}
				if wantLRFU == "" || lrfuLess(lrfu.m[k], lrfu.m[wantLRFU]) {
					wantLRFU = k
				}
			}
			if got, ok := lru.Victim(skip); got != wantLRU || ok != (wantLRU != "") {
				t.Fatalf("LRU Victim = %q, %v; want %q", got, ok, wantLRU)
			}
			if got, ok := lrfu.Victim(skip); got != wantLRFU || ok != (wantLRFU != "") {
				t.Fatalf("LRFU Victim = %q, %v; want %q", got, ok, wantLRFU)
			}
		}
	})
}

func TestNewPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lambda  float64
		wantErr bool
	}{
		{"lru", 0, false}, {"lrfu", 0.1, false}, {"lrfu", 1.5, true}, {"lfu", 0, true},
	} {
		_, err := NewPolicy(tc.name, tc.lambda)
		if (err != nil) != tc.wantErr {
			t.Errorf("NewPolicy(%q, %v) error = %v; want error %v", tc.name, tc.lambda, err, tc.wantErr)
		}
	}
}
