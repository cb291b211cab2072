package stream

import (
	"fmt"
	"sync"
)

// Reorder holds the results of one stream's outstanding items and releases them in
// submission order, each exactly once. It holds at most its window: Admit refuses an
// item past it. It is safe for concurrent use; mu guards the fields below.
type Reorder[R any] struct {
	mu          sync.Mutex
	window      uint64
	admitted    uint64       // items admitted: the next item's seq
	next        uint64       // the next seq to release
	held        map[uint64]R // finished, not released: seqs > next
	maxOutstand uint64       // the most items ever outstanding at once
}

// NewReorder returns an empty Reorder with window w (w > 0).
func NewReorder[R any](w int) *Reorder[R] {
	return &Reorder[R]{window: uint64(w), held: map[uint64]R{}}
}

// Admit admits the next item and returns its seq, or an error when window items are
// already outstanding (the caller reads no further item until Done releases one).
func (o *Reorder[R]) Admit() (uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.admitted-o.next >= o.window {
		return 0, fmt.Errorf("window of %d items full", o.window)
	}
	seq := o.admitted
	o.admitted++
	o.maxOutstand = max(o.maxOutstand, o.admitted-o.next)
	return seq, nil
}

// Done records the result of item seq and returns the results now releasable, in
// order: none when an earlier item is still running, several when seq was the one they
// waited for. A second result for the same seq, or one for an item never admitted or
// already released, is an error and changes nothing.
func (o *Reorder[R]) Done(seq uint64, r R) ([]R, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if seq >= o.admitted || seq < o.next {
		return nil, fmt.Errorf("result for item %d: not outstanding (admitted %d, released %d)", seq, o.admitted, o.next)
	}
	if _, dup := o.held[seq]; dup {
		return nil, fmt.Errorf("result for item %d: already recorded", seq)
	}
	o.held[seq] = r
	var out []R
	for {
		h, ok := o.held[o.next]
		if !ok {
			return out, nil
		}
		delete(o.held, o.next)
		out = append(out, h)
		o.next++
	}
}

// Stats are a Reorder's counters.
type Stats struct {
	// Admitted counts the items admitted, Released the results released.
	Admitted, Released uint64
	// Outstanding is Admitted - Released; MaxOutstanding the most there ever were.
	Outstanding, MaxOutstanding uint64
	// Held counts results finished early and held for an earlier one.
	Held int
}

// Stats returns o's counters.
func (o *Reorder[R]) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return Stats{Admitted: o.admitted, Released: o.next, Outstanding: o.admitted - o.next, MaxOutstanding: o.maxOutstand, Held: len(o.held)}
}
