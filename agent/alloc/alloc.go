package alloc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Clock tells the time; tests drive a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// TypeConfig is one task type's share.
type TypeConfig struct {
	// Name of the task type.
	Name string
	// Min is the number of slots the type always has (at least 1).
	Min int
	// TolerableDelay is how long a task of this type may wait for a slot
	// before the type is considered short of slots (> 0).
	TolerableDelay time.Duration
}

// Config configures an Allocator.
type Config struct {
	// Total number of slots (tasks running at once in this agent).
	Total int
	// Types sharing them; the sum of their Min must not exceed Total.
	Types []TypeConfig
	// Interval between rebalances when Run drives them. Default 1s.
	Interval time.Duration
	// Clock; default the real one.
	Clock Clock
}

// Validate reports the first invalid field, naming it.
func (c Config) Validate() error {
	if c.Total < 1 {
		return fmt.Errorf("alloc config: Total %d: need at least 1 slot", c.Total)
	}
	if len(c.Types) == 0 {
		return errors.New("alloc config: Types is empty: list the task types to share slots among")
	}
	seen := map[string]bool{}
	sum := 0
	for i, t := range c.Types {
		switch {
		case t.Name == "":
			return fmt.Errorf("alloc config: Types[%d].Name is empty", i)
		case seen[t.Name]:
			return fmt.Errorf("alloc config: type %q listed twice", t.Name)
		case t.Min < 1:
			return fmt.Errorf("alloc config: type %q: Min %d: every type needs at least 1 slot so it cannot starve", t.Name, t.Min)
		case t.TolerableDelay <= 0:
			return fmt.Errorf("alloc config: type %q: TolerableDelay %v must be positive", t.Name, t.TolerableDelay)
		}
		seen[t.Name] = true
		sum += t.Min
	}
	if sum > c.Total {
		return fmt.Errorf("alloc config: the types' Min add up to %d, more than Total %d: raise Total or lower the minimums", sum, c.Total)
	}
	if c.Interval < 0 {
		return fmt.Errorf("alloc config: Interval %v is negative", c.Interval)
	}
	return nil
}

// ErrUnknownType is returned for a type the allocator was not configured with.
var ErrUnknownType = errors.New("unknown task type")

// Allocator shares slots among task types. It is safe for concurrent use.
type Allocator struct {
	clock    Clock
	interval time.Duration
	total    int

	// mu guards the fields below and every typeState and Ticket.
	mu     sync.Mutex
	types  []*typeState // in config order
	byName map[string]*typeState
	inUse  int
	last   Snapshot
}

type typeState struct {
	cfg     TypeConfig
	limit   int
	running int
	queue   []*Ticket // FIFO of waiting tickets
	// measured this cycle
	maxWait time.Duration
	granted int
	// observed this cycle (Observe): the queuing delay and backlog measured where
	// the tasks queue when that is outside the allocator (the server's queue)
	obsDelay   time.Duration
	obsWaiting int
	// from the last rebalance
	delay time.Duration
}

// Ticket is one request for a slot.
type Ticket struct {
	a        *Allocator
	ts       *typeState
	enqueued time.Time
	ready    chan struct{}
	granted  bool
	done     bool
	wait     time.Duration
}

// New returns an allocator whose initial limits are the minimums plus the extra
// slots spread evenly.
func New(cfg Config) (*Allocator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	a := &Allocator{clock: cfg.Clock, interval: cfg.Interval, total: cfg.Total, byName: map[string]*typeState{}}
	extra := cfg.Total
	for _, t := range cfg.Types {
		ts := &typeState{cfg: t, limit: t.Min}
		a.types = append(a.types, ts)
		a.byName[t.Name] = ts
		extra -= t.Min
	}
	for i := 0; extra > 0; i, extra = i+1, extra-1 {
		a.types[i%len(a.types)].limit++
	}
	a.last = a.snapshotLocked(a.clock.Now())
	return a, nil
}

// Enqueue asks for a slot of type typ without blocking. The ticket is granted
// at once if a slot is free, else later, in FIFO order within its type; wait on
// Ready. Every ticket must be Released (granted or not).
func (a *Allocator) Enqueue(typ string) (*Ticket, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts := a.byName[typ]
	if ts == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, typ)
	}
	t := &Ticket{a: a, ts: ts, enqueued: a.clock.Now(), ready: make(chan struct{})}
	ts.queue = append(ts.queue, t)
	a.dispatchLocked()
	return t, nil
}

// ErrFull is returned by Admit when every one of the Total slots is busy.
var ErrFull = errors.New("all slots are busy")

// Admit takes a slot of type typ at once, without queueing: within the type's
// limit when it has a free slot, else any idle slot of the Total (borrowed, and
// counted against the type until released). It fails with ErrFull only when all
// Total slots are busy.
//
// Admit is for a caller whose tasks queue elsewhere and that is only offered a
// task while the type has a free slot by the allocation it last published: the
// agent's session, to which the server dispatches each type against the limits
// of the last heartbeat. A rebalance the server has not yet heard of may lower a
// type's limit below what the server counts on; borrowing an idle slot then
// beats refusing the task (a refusal costs the task an attempt), and the total
// is never exceeded.
func (a *Allocator) Admit(typ string) (*Ticket, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts := a.byName[typ]
	if ts == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, typ)
	}
	if a.inUse >= a.total {
		return nil, fmt.Errorf("%w (%d of %d in use)", ErrFull, a.inUse, a.total)
	}
	now := a.clock.Now()
	t := &Ticket{a: a, ts: ts, enqueued: now, ready: make(chan struct{}), granted: true}
	ts.running++
	ts.granted++
	a.inUse++
	close(t.ready)
	return t, nil
}

// Observe records a queuing delay and a backlog of type typ measured outside
// the allocator, for the current cycle: delay is how long tasks of the type
// have been waiting for a slot, waiting how many wait. When tasks queue outside
// (the server keeps the queue and dispatches each type against this
// allocator's limits) the allocator sees no waiters of its own, so these are
// its measurement of demand. Rebalance uses the longest delay observed in the
// cycle (or its own measurement, if longer) and the last backlog, then forgets
// both.
func (a *Allocator) Observe(typ string, delay time.Duration, waiting int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts := a.byName[typ]
	if ts == nil {
		return fmt.Errorf("%w %q", ErrUnknownType, typ)
	}
	ts.obsDelay = max(ts.obsDelay, delay)
	ts.obsWaiting = max(waiting, 0)
	return nil
}

// Acquire blocks until a slot of type typ is free or ctx is done. Release the
// returned ticket when the task ends.
func (a *Allocator) Acquire(ctx context.Context, typ string) (*Ticket, error) {
	t, err := a.Enqueue(typ)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.ready:
		return t, nil
	case <-ctx.Done():
		t.Release()
		return nil, ctx.Err()
	}
}

// Ready is closed when the ticket holds a slot.
func (t *Ticket) Ready() <-chan struct{} { return t.ready }

// Granted reports whether the ticket holds a slot.
func (t *Ticket) Granted() bool {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	return t.granted && !t.done
}

// Wait is how long the ticket queued before it was granted.
func (t *Ticket) Wait() time.Duration {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	return t.wait
}

// Release gives the slot back (or withdraws a ticket still waiting). Calling it
// again does nothing.
func (t *Ticket) Release() {
	a := t.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.done {
		return
	}
	t.done = true
	if t.granted {
		t.ts.running--
		a.inUse--
	} else {
		q := t.ts.queue
		for i, x := range q {
			if x == t {
				t.ts.queue = append(q[:i:i], q[i+1:]...)
				break
			}
		}
	}
	a.dispatchLocked()
}

// pressure is the age of the oldest waiter of ts in multiples of its tolerable
// delay (-1 when nothing waits).
func (ts *typeState) pressure(now time.Time) float64 {
	if len(ts.queue) == 0 {
		return -1
	}
	return float64(now.Sub(ts.queue[0].enqueued)) / float64(ts.cfg.TolerableDelay)
}

// dispatchLocked grants free slots to waiting tickets, the type furthest over
// its tolerable delay first, never past a type's limit or the total.
func (a *Allocator) dispatchLocked() {
	now := a.clock.Now()
	for a.inUse < a.total {
		var best *typeState
		for _, ts := range a.types {
			if len(ts.queue) == 0 || ts.running >= ts.limit {
				continue
			}
			if best == nil || ts.pressure(now) > best.pressure(now) {
				best = ts
			}
		}
		if best == nil {
			return
		}
		t := best.queue[0]
		best.queue = best.queue[1:]
		t.granted = true
		t.wait = now.Sub(t.enqueued)
		best.running++
		best.granted++
		best.maxWait = max(best.maxWait, t.wait)
		a.inUse++
		close(t.ready)
	}
}

// Rebalance ends a cycle: it measures each type's queuing delay (the longest
// wait of the tickets granted this cycle, the age of the oldest ticket still
// waiting, or the delay given to Observe, whichever is longest), gives every type its minimum, and hands out the
// extra slots one at a time to the type whose delay — scaled by the slots it
// would then have — is furthest above its tolerable delay, measured in
// multiples of that tolerable delay (so 200ms against 50ms tolerable, 4×, beats
// 2s against 1s, 2×), among types with more demand (running + waiting, here
// and as observed) than slots. Slots nobody is short of are
// spread over all types, tightest tolerable delay first, so a burst finds them.
// It returns the new allocation.
func (a *Allocator) Rebalance() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	extra := a.total
	limits := make([]int, len(a.types))
	for i, ts := range a.types {
		d := max(ts.maxWait, ts.obsDelay)
		if len(ts.queue) > 0 {
			d = max(d, now.Sub(ts.queue[0].enqueued))
		}
		ts.delay = d
		limits[i] = ts.cfg.Min
		extra -= ts.cfg.Min
	}
	// Expected delay with n slots (if delay scales inversely with the slots) in
	// multiples of the tolerable delay.
	est := func(i, n int) float64 {
		ts := a.types[i]
		return float64(ts.delay) * float64(max(ts.limit, 1)) / float64(n) / float64(ts.cfg.TolerableDelay)
	}
	for ; extra > 0; extra-- {
		best := -1
		var bestEx float64
		for i, ts := range a.types {
			if limits[i] >= ts.running+len(ts.queue)+ts.obsWaiting {
				continue // has all the slots it can use
			}
			ex := est(i, limits[i]+1)
			if best < 0 || ex > bestEx || ex == bestEx && ts.cfg.TolerableDelay < a.types[best].cfg.TolerableDelay {
				best, bestEx = i, ex
			}
		}
		if best < 0 {
			break
		}
		limits[best]++
	}
	if extra > 0 {
		order := make([]int, len(a.types))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(x, y int) bool {
			return a.types[order[x]].cfg.TolerableDelay < a.types[order[y]].cfg.TolerableDelay
		})
		for k := 0; extra > 0; k, extra = k+1, extra-1 {
			limits[order[k%len(order)]]++
		}
	}
	for i, ts := range a.types {
		ts.limit = limits[i]
	}
	a.last = a.snapshotLocked(now)
	for _, ts := range a.types {
		ts.maxWait, ts.granted, ts.obsDelay, ts.obsWaiting = 0, 0, 0, 0
	}
	a.dispatchLocked()
	return a.last
}

// Run calls Rebalance every Interval until ctx is done; it returns ctx.Err().
func (a *Allocator) Run(ctx context.Context) error {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			a.Rebalance()
		}
	}
}
