package vmpool

import (
	"context"
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
// snapshot saved, or its failure. Waiters are served in the order they came (Go
// channels queue blocked senders first in, first out).
type startLimiter struct {
	slots    chan struct{}
	inFlight prometheus.Gauge // starts holding a slot
	waiting  prometheus.Gauge // starts waiting for one
}

func newStartLimiter(n int, inFlight, waiting prometheus.Gauge) *startLimiter {
	return &startLimiter{slots: make(chan struct{}, n), inFlight: inFlight, waiting: waiting}
}

// tryAcquire takes a slot when one is free at once (ok false: none is).
func (l *startLimiter) tryAcquire() (release func(), ok bool) {
	select {
	case l.slots <- struct{}{}:
		return l.taken(), true
	default:
		return nil, false
	}
}

// acquire blocks until a slot is free, or returns ctx's error when ctx ends first
// (holding nothing). The caller must call release once the start is over; release is
// safe to call more than once (and a no-op after an error).
func (l *startLimiter) acquire(ctx context.Context) (release func(), err error) {
	if r, ok := l.tryAcquire(); ok {
		return r, nil
	}
	l.waiting.Inc()
	defer l.waiting.Dec()
	select {
	case l.slots <- struct{}{}:
		return l.taken(), nil
	case <-ctx.Done():
		return func() {}, ctx.Err()
	}
}

// taken counts a slot just taken and returns its release.
func (l *startLimiter) taken() func() {
	l.inFlight.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-l.slots
			l.inFlight.Dec()
		})
	}
}
