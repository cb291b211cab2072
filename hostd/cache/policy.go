package cache

import (
	"container/heap"
	"container/list"
	"fmt"
	"math"
)

// Policy orders one tier's entries for eviction. Keys are digests as text; now is the
// cache's logical clock, which advances by one on every reference (as in the LRFU paper,
// so λ is per reference, not per second). A Policy is not safe for concurrent use: the
// cache's lock guards it.
type Policy interface {
	// Touch records a reference to key at now, adding key when it is new. now never
	// decreases between calls.
	Touch(key string, now int64)
	// Remove forgets key (and, for LRFU, its history).
	Remove(key string)
	// Victim returns the key to evict next among those for which skip (when not nil)
	// returns false: the cache skips pinned entries (in use, or waiting for upload). It
	// does not remove the key. ok is false when there is no such key.
	Victim(skip func(key string) bool) (key string, ok bool)
	// Len returns the number of keys.
	Len() int
}

// NewPolicy returns the policy named name ("lru" or "lrfu"; lambda is LRFU's λ in [0, 1]).
func NewPolicy(name string, lambda float64) (Policy, error) {
	switch name {
	case PolicyLRU:
		return NewLRU(), nil
	case PolicyLRFU:
		if !(lambda >= 0 && lambda <= 1) {
			return nil, fmt.Errorf("host.cache_lrfu_lambda is %v: give a number from 0 to 1", lambda)
		}
		return NewLRFU(lambda), nil
	}
	return nil, fmt.Errorf("host.cache_policy is %q: use %q or %q", name, PolicyLRU, PolicyLRFU)
}

// LRU evicts the least recently touched key.
type LRU struct {
	l *list.List // front: most recent; values are keys
	m map[string]*list.Element
}

var _ Policy = (*LRU)(nil)

// NewLRU returns an empty LRU policy.
func NewLRU() *LRU { return &LRU{l: list.New(), m: map[string]*list.Element{}} }

// Touch makes key the most recently used.
func (p *LRU) Touch(key string, _ int64) {
	if e, ok := p.m[key]; ok {
		p.l.MoveToFront(e)
		return
	}
	p.m[key] = p.l.PushFront(key)
}

// Remove forgets key.
func (p *LRU) Remove(key string) {
	if e, ok := p.m[key]; ok {
		p.l.Remove(e)
		delete(p.m, key)
	}
}

// Victim returns the least recently used key not skipped.
func (p *LRU) Victim(skip func(string) bool) (string, bool) {
	for e := p.l.Back(); e != nil; e = e.Prev() {
		k := e.Value.(string)
		if skip == nil || !skip(k) {
			return k, true
		}
	}
	return "", false
}

// Len returns the number of keys.
func (p *LRU) Len() int { return len(p.m) }

// LRFU is Lee et al.'s Least Recently/Frequently Used policy ("LRFU: a spectrum of
// policies that subsumes the LRU and LFU policies", IEEE ToC 2001). Each key's Combined
// Recency and Frequency is CRF(now) = Σ (1/2)^(λ·(now − tᵢ)) over its references tᵢ since
// it entered; the key with the smallest CRF is evicted (ties: the older last reference,
// then the smaller key). λ = 0 is LFU, λ = 1 is LRU (a single reference now outweighs any
// history, as Σ 2^-k < 1).
//
// It keeps, per key, the CRF at its last reference, C, and that time, t: a reference at
// now makes C = 1 + C·2^(−λ(now−t)). Since every CRF decays by the same factor as time
// passes, keys order by log₂C + λt at any time, which never changes between references:
// a heap on that value gives Touch, Remove and Victim in O(log n).
type LRFU struct {
	lambda float64
	h      lrfuHeap
	m      map[string]*lrfuItem
}

var _ Policy = (*LRFU)(nil)

type lrfuItem struct {
	key  string
	crf  float64 // CRF at last
	last int64   // time of the last reference
	prio float64 // log2(crf) + lambda*last: the order of CRFs at any time
	idx  int     // index in the heap
}

// NewLRFU returns an empty LRFU policy with λ = lambda (0 ≤ λ ≤ 1).
func NewLRFU(lambda float64) *LRFU { return &LRFU{lambda: lambda, m: map[string]*lrfuItem{}} }

// Touch records a reference to key at now.
func (p *LRFU) Touch(key string, now int64) {
	it, ok := p.m[key]
	if !ok {
		it = &lrfuItem{key: key, crf: 1, last: now}
		it.prio = p.lambda * float64(now)
		p.m[key] = it
		heap.Push(&p.h, it)
		return
	}
	if now < it.last {
		now = it.last
	}
	it.crf = 1 + it.crf*math.Exp2(-p.lambda*float64(now-it.last))
	it.last = now
	it.prio = math.Log2(it.crf) + p.lambda*float64(now)
	heap.Fix(&p.h, it.idx)
}

// CRF returns key's CRF at now (0 when key is unknown); for tests and debugging.
func (p *LRFU) CRF(key string, now int64) float64 {
	it, ok := p.m[key]
	if !ok {
		return 0
	}
	return it.crf * math.Exp2(-p.lambda*float64(now-it.last))
}

// Remove forgets key and its history.
func (p *LRFU) Remove(key string) {
	if it, ok := p.m[key]; ok {
		heap.Remove(&p.h, it.idx)
		delete(p.m, key)
	}
}

// Victim returns the key with the smallest CRF not skipped. It searches the heap from its
// root, descending only below skipped keys, so it costs O(k log k) for k skipped keys.
func (p *LRFU) Victim(skip func(string) bool) (string, bool) {
	if len(p.h) == 0 {
		return "", false
	}
	if skip == nil || !skip(p.h[0].key) {
		return p.h[0].key, true
	}
	cand := lrfuHeap{p.h[0]} // a frontier of heap nodes, itself a heap (indices not kept)
	for len(cand) > 0 {
		it := cand.popNoIndex()
		if !skip(it.key) {
			return it.key, true
		}
		for _, c := range [2]int{2*it.idx + 1, 2*it.idx + 2} {
			if c < len(p.h) {
				cand.pushNoIndex(p.h[c])
			}
		}
	}
	return "", false
}

// Len returns the number of keys.
func (p *LRFU) Len() int { return len(p.m) }

type lrfuHeap []*lrfuItem

func (h lrfuHeap) Len() int           { return len(h) }
func (h lrfuHeap) Less(i, j int) bool { return lrfuLess(h[i], h[j]) }

func lrfuLess(a, b *lrfuItem) bool {
	if a.prio != b.prio {
		return a.prio < b.prio
	}
	if a.last != b.last {
		return a.last < b.last
	}
	return a.key < b.key
}

func (h lrfuHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}

func (h *lrfuHeap) Push(x any) {
	it := x.(*lrfuItem)
	it.idx = len(*h)
	*h = append(*h, it)
}

func (h *lrfuHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

// pushNoIndex and popNoIndex keep h a heap without touching the items' idx (Victim's
// frontier holds items that stay in the main heap).
func (h *lrfuHeap) pushNoIndex(it *lrfuItem) {
	*h = append(*h, it)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if !lrfuLess(s[i], s[parent]) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *lrfuHeap) popNoIndex() *lrfuItem {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && lrfuLess(s[l], s[m]) {
			m = l
		}
		if r < n && lrfuLess(s[r], s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
