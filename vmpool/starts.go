package vmpool

import (
	"context"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConcurrentStarts is Config.MaxConcurrentStarts's default: enough to keep
// a host's scale-up moving, few enough that a burst (min_idle 40 at start, a backlog
// of hundreds) does not open dozens of QEMU processes and libvirt calls at once (40
// creates at once broke the libvirt connection here: "Cannot write data: Broken pipe").
const DefaultMaxConcurrentStarts = 4

// startLimiter bounds how many guests the host starts at once (Config.
// MaxConcurrentStarts): a start holds a slot from before its domain is created or
// restored (or a template guest is booted for a snapshot) until its ready line, its
// snapshot saved, or its failure. Waiters are served first come, first served, except
// that a snapshot template (acquire with first set) goes ahead of the guests: every
// guest that starts after the snapshot is saved is restored instead of booted.
type startLimiter struct {
	inFlight prometheus.Gauge // starts holding a slot
	waiting  prometheus.Gauge // starts waiting for one

	mu    sync.Mutex // guards the fields below
	free  int        // slots nobody holds (0 while anyone waits)
	queue []*startWaiter
}

type startWaiter struct {
	granted chan struct{} // closed when a slot is handed to the waiter
	first   bool
}

func newStartLimiter(n int, inFlight, waiting prometheus.Gauge) *startLimiter {
	return &startLimiter{free: n, inFlight: inFlight, waiting: waiting}
}

// tryAcquire takes a slot when one is free and nobody waits (ok false otherwise).
func (l *startLimiter) tryAcquire() (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.free == 0 || len(l.queue) > 0 {
		return nil, false
	}
	l.free--
	return l.taken(), true
}

// acquire blocks until a slot is the caller's, or returns ctx's error when ctx ends
// first (holding nothing). first puts the caller ahead of every waiter without it. The
// caller must call release once the start is over; release is safe to call more than
// once (and a no-op after an error).
func (l *startLimiter) acquire(ctx context.Context, first bool) (release func(), err error) {
	w := &startWaiter{granted: make(chan struct{}), first: first}
	l.mu.Lock()
	if l.free > 0 && len(l.queue) == 0 { // checked and queued under one lock: a slot freed just now is not missed
		l.free--
		l.mu.Unlock()
		return l.taken(), nil
	}
	at := len(l.queue)
	if first {
		at = slices.IndexFunc(l.queue, func(o *startWaiter) bool { return !o.first })
		if at < 0 {
			at = len(l.queue)
		}
	}
	l.queue = slices.Insert(l.queue, at, w)
	l.waiting.Inc()
	l.mu.Unlock()
	select {
	case <-w.granted:
		return l.taken(), nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	if i := slices.Index(l.queue, w); i >= 0 { // still waiting: leave the queue
		l.queue = slices.Delete(l.queue, i, i+1)
		l.waiting.Dec()
		l.mu.Unlock()
		return func() {}, ctx.Err()
	}
	l.mu.Unlock()
	l.handOn() // a slot was handed over just as ctx ended: pass it on
	return func() {}, ctx.Err()
}

// taken counts a slot just taken and returns its release.
func (l *startLimiter) taken() func() {
	l.inFlight.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.inFlight.Dec()
			l.handOn()
		})
	}
}

// handOn gives a slot that was just let go to the first waiter, or frees it.
func (l *startLimiter) handOn() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.queue) == 0 {
		l.free++
		return
	}
	w := l.queue[0]
	l.queue = l.queue[1:]
	l.waiting.Dec()
	close(w.granted)
}
