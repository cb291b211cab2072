package vmpool

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStartLimiter: many starts at once never hold more than the limit's slots
// together, all of them get one in the end, a release may be called twice, and a
// wait that ends with its context holds nothing.
func TestStartLimiter(t *testing.T) {
	for _, limit := range []int{1, 2, 5} {
		inFlight, waiting := prometheus.NewGauge(prometheus.GaugeOpts{Name: "i"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "w"})
		l := newStartLimiter(limit, inFlight, waiting)
		var cur, peak, done atomic.Int64
		var wg sync.WaitGroup
		for range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				release, err := l.acquire(context.Background(), false)
				if err != nil {
					t.Error(err)
					return
				}
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				time.Sleep(time.Millisecond)
				cur.Add(-1)
				release()
				release() // idempotent
				done.Add(1)
			}()
		}
		wg.Wait()
		if p := peak.Load(); p > int64(limit) || p < 1 {
			t.Errorf("limit %d: %d starts held a slot at once", limit, p)
		}
		if done.Load() != 40 {
			t.Errorf("limit %d: %d of 40 starts got a slot", limit, done.Load())
		}
		if v, w := testutil.ToFloat64(inFlight), testutil.ToFloat64(waiting); v != 0 || w != 0 {
			t.Errorf("limit %d: gauges in flight %v, waiting %v after all released, want 0 and 0", limit, v, w)
		}
	}

	l := newStartLimiter(1, prometheus.NewGauge(prometheus.GaugeOpts{Name: "i"}), prometheus.NewGauge(prometheus.GaugeOpts{Name: "w"}))
	hold, err := l.acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.tryAcquire(); ok {
		t.Fatal("tryAcquire took a second slot of a limit of 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r, err := l.acquire(ctx, false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire with every slot held: err = %v, want the context's deadline", err)
	}
	r() // a no-op: must not free the slot hold has
	if _, ok := l.tryAcquire(); ok {
		t.Fatal("the release of a failed acquire freed another start's slot")
	}
	hold()
	if _, ok := l.tryAcquire(); !ok {
		t.Fatal("no slot free after the only holder released it")
	}
}

// TestMaxConcurrentStarts: a pool that wants five guests at once on a host with
// max_concurrent_starts 2 creates two domains, keeps the other three booting without
// one, and starts each of them only when a start before it has ended; all five end up
// idle.
func TestMaxConcurrentStarts(t *testing.T) {
	e := newEnv(t, Config{MaxConcurrentStarts: 2, Pools: []PoolConfig{poolCfg("burst", 5, 5)}})
	gate := make(chan struct{})
	e.conn.gate = gate
	e.start()
	waitingReady := func() int {
		e.conn.mu.Lock()
		defer e.conn.mu.Unlock()
		return e.conn.waiting
	}
	e.eventually("two starts under way", func() bool { return e.domains() == 2 && waitingReady() == 2 })
	e.steady("two domains, five guests booting", func() bool { return e.domains() == 2 && e.count("burst", StateBooting) == 5 })
	e.eventually("gauges: 2 starts in flight, 3 waiting", func() bool {
		in, _ := metricValue(t, e.reg, "paddock_vmpool_starts_in_flight", nil)
		w, _ := metricValue(t, e.reg, "paddock_vmpool_starts_waiting", nil)
		return in == 2 && w == 3
	})
	for ready := 1; ready <= 5; ready++ {
		gate <- struct{}{}
		e.eventually("one more guest idle", func() bool { return e.count("burst", StateIdle) == ready })
		want := min(2, 5-ready)
		e.eventually("the next start under way", func() bool { return waitingReady() == want })
		// Every domain is a guest that is idle or holds a slot.
		if n, idle := e.domains(), e.count("burst", StateIdle); n > idle+2 {
			t.Fatalf("%d domains with %d guests idle: more than 2 starting", n, idle)
		}
	}
	if !strings.Contains(e.logs.String(), "guest waits for a start slot") {
		t.Errorf("no log line for a guest waiting for a start slot")
	}
}

// TestStartLimiterOrder: waiters get slots in the order they came, except that one
// acquiring with first (a snapshot template) goes ahead of those without; a waiter
// whose context ends leaves the queue without taking a slot from the others.
func TestStartLimiterOrder(t *testing.T) {
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{Name: "w"})
	l := newStartLimiter(1, prometheus.NewGauge(prometheus.GaugeOpts{Name: "i"}), waiting)
	hold, err := l.acquire(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	enqueue := func(name string, first bool, ctx context.Context) {
		n := testutil.ToFloat64(waiting)
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := l.acquire(ctx, first)
			if err != nil {
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			release()
		}()
		for testutil.ToFloat64(waiting) == n { // queued before the next one comes
			time.Sleep(time.Millisecond)
		}
	}
	gone, cancel := context.WithCancel(context.Background())
	enqueue("guest1", false, context.Background())
	enqueue("cancelled", false, gone)
	enqueue("guest2", false, context.Background())
	enqueue("template", true, context.Background())
	cancel()
	for testutil.ToFloat64(waiting) != 3 {
		time.Sleep(time.Millisecond)
	}
	hold()
	wg.Wait()
	if got := strings.Join(order, ","); got != "template,guest1,guest2" {
		t.Errorf("slots went to %s, want template,guest1,guest2", got)
	}
	if _, ok := l.tryAcquire(); !ok {
		t.Errorf("the slot was lost after every waiter released it")
	}
}
