package bwshare

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// chunk is the most bytes one Read passes before waiting on its limiter.
const chunk = 64 << 10

// burstTime is how much of its rate a class may save up while its reader is slow
// (a loaded machine, a stalled socket) and spend at once: without it, time spent
// reading is lost to the limiter and a class gets less than its share.
const burstTime = 500 * time.Millisecond

// burst returns the limiter burst for rate r: burstTime of it, at least chunk.
func burst(r float64) int {
	if math.IsInf(r, 1) {
		return chunk
	}
	return max(chunk, int(r*burstTime.Seconds()))
}

// Shaper shares the capacity among the transfers' classes. It is safe for concurrent use.
type Shaper struct {
	cfg   Config
	log   *slog.Logger
	total atomic.Int64 // bytes through every Reader

	bytes    *prometheus.CounterVec
	limits   *prometheus.GaugeVec
	capacity prometheus.Gauge

	// mu guards the fields below.
	mu       sync.Mutex
	classes  map[string]*class
	unknown  map[string]bool // names already logged as unconfigured
	scaled   bool            // the last allocation scaled the minimums down
	active   int             // transfers open
	useAt    time.Time       // Usage's last sample
	useBytes int64
	useRate  float64
}

// class is one class's limiter and count of open transfers.
type class struct {
	name   string
	cfg    Class
	lim    *rate.Limiter
	active int // guarded by Shaper.mu
	bytes  prometheus.Counter
	n      atomic.Int64 // bytes through the class's Readers
}

// New checks cfg and returns a Shaper whose metrics are registered with reg (nil: not
// registered).
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Shaper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Shaper{cfg: cfg, log: log.With("component", "bwshare"), classes: map[string]*class{}, unknown: map[string]bool{},
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_transfer_bytes_total",
			Help: "Bytes of the host's data transfers (blob fetches into the cache, output uploads), by bandwidth class; bytes/s: rate()."}, []string{"class"}),
		limits: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "paddock_host_bandwidth_limit_bytes_per_second",
			Help: "Each active bandwidth class's current share of host.bandwidth (0: no transfer; +Inf: not shaped)."}, []string{"class"}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "paddock_host_bandwidth_capacity_bytes_per_second",
			Help: "host.bandwidth, the capacity the host's transfers share (0: not shaped)."}),
	}
	s.capacity.Set(cfg.Capacity)
	if reg != nil {
		for _, c := range []prometheus.Collector{s.bytes, s.limits, s.capacity} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering bandwidth metrics: %w", err)
			}
		}
	}
	names := []string{DefaultClass}
	for n := range cfg.Classes {
		if n != DefaultClass {
			names = append(names, n)
		}
	}
	for _, n := range names {
		c, ok := cfg.Classes[n]
		if !ok {
			c = Class{Weight: 1}
		}
		s.classes[n] = &class{name: n, cfg: c, lim: rate.NewLimiter(rate.Inf, chunk), bytes: s.bytes.WithLabelValues(n)}
		s.limits.WithLabelValues(n)
	}
	return s, nil
}

// Capacity returns host.bandwidth in bytes/s (0: not shaped).
func (s *Shaper) Capacity() float64 { return s.cfg.Capacity }

// Configured reports whether name is a configured class (DefaultClass always is).
func (s *Shaper) Configured(name string) bool {
	_, ok := s.classes[name] // never changes after New
	return ok
}

// Classify returns the class of a task's transfers: its tenant when a class of that
// name is configured, else its service class (online, batch) when configured, else
// DefaultClass.
func (s *Shaper) Classify(tenant, taskClass string) string {
	switch {
	case tenant != "" && s.Configured(tenant):
		return tenant
	case taskClass != "" && s.Configured(taskClass):
		return taskClass
	}
	return DefaultClass
}

// resolve returns the class named name, DefaultClass when it is not configured (logged
// once per name). Caller holds s.mu.
func (s *Shaper) resolve(name string) *class {
	if c, ok := s.classes[name]; ok {
		return c
	}
	if name != "" && !s.unknown[name] {
		s.unknown[name] = true
		s.log.Warn("a transfer names a bandwidth class that is not configured: shaping it as class "+DefaultClass+"; add host.bandwidth_classes."+name+" to give it a share",
			"class", name)
	}
	return s.classes[DefaultClass]
}

// Reader returns r shaped as a transfer of class (see Classify; "" or unknown:
// DefaultClass). The transfer counts as active until Close, which also closes r when
// it is an io.Closer. The caller must Close it.
func (s *Shaper) Reader(ctx context.Context, className string, r io.Reader) *Reader {
	s.mu.Lock()
	c := s.resolve(className)
	c.active++
	s.active++
	if c.active == 1 {
		s.reallocate()
	}
	s.mu.Unlock()
	return &Reader{ctx: ctx, s: s, c: c, r: r}
}

// end ends one transfer of c.
func (s *Shaper) end(c *class) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.active--
	s.active--
	if c.active == 0 {
		s.limits.WithLabelValues(c.name).Set(0)
		s.reallocate()
	}
}

// reallocate re-divides the capacity among the active classes. Caller holds s.mu.
func (s *Shaper) reallocate() {
	var act []Demand
	for _, c := range s.classes {
		if c.active > 0 {
			act = append(act, Demand{Name: c.name, Class: c.cfg})
		}
	}
	sort.Slice(act, func(i, j int) bool { return act[i].Name < act[j].Name })
	a := Allocate(s.cfg.Capacity, act)
	for _, d := range act {
		r := a.Rates[d.Name]
		lim := rate.Limit(r)
		if math.IsInf(r, 1) {
			lim = rate.Inf
		}
		s.classes[d.Name].lim.SetLimit(lim)
		s.classes[d.Name].lim.SetBurst(burst(r))
		s.limits.WithLabelValues(d.Name).Set(r)
	}
	if a.Scaled && !s.scaled {
		names := make([]string, len(act))
		for i, d := range act {
			names[i] = d.Name
		}
		s.log.Warn("the minimums of the active bandwidth classes exceed host.bandwidth: scaling them down in proportion; lower host.bandwidth_classes.<name>.min or raise host.bandwidth",
			"classes", names, "minimums_bytes_per_second", a.MinSum, "capacity_bytes_per_second", s.cfg.Capacity, "scale", s.cfg.Capacity/a.MinSum)
	}
	s.scaled = a.Scaled
}

// Rates returns the current rate (bytes/s) of each active class.
func (s *Shaper) Rates() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for _, c := range s.classes {
		if c.active > 0 {
			out[c.name] = float64(c.lim.Limit())
		}
	}
	return out
}

// Bytes returns the bytes moved so far in class name (0 for a class not configured:
// its transfers count as DefaultClass).
func (s *Shaper) Bytes(name string) int64 {
	if c, ok := s.classes[name]; ok {
		return c.n.Load()
	}
	return 0
}

// Usage is the link's use.
type Usage struct {
	// Capacity is host.bandwidth in bytes/s (0: not shaped).
	Capacity float64
	// Rate is the bytes/s moved over the window since the previous sample (at least
	// one second; the first call gives 0).
	Rate float64
	// Active is the number of transfers open now.
	Active int
}

// Usage samples the link's use. Calls less than a second apart return the previous
// rate.
func (s *Shaper) Usage(now time.Time) Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := s.total.Load()
	if s.useAt.IsZero() {
		s.useAt, s.useBytes = now, total
	} else if dt := now.Sub(s.useAt); dt >= time.Second {
		s.useRate = float64(total-s.useBytes) / dt.Seconds()
		s.useAt, s.useBytes = now, total
	}
	return Usage{Capacity: s.cfg.Capacity, Rate: s.useRate, Active: s.active}
}

// Reader is one shaped transfer (Shaper.Reader).
type Reader struct {
	ctx  context.Context
	s    *Shaper
	c    *class
	r    io.Reader
	once sync.Once
}

// Read reads at most 64 KiB from the underlying reader and waits on the class's
// limiter for the bytes read (the context's end stops the wait).
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) > chunk {
		p = p[:chunk]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		r.s.total.Add(int64(n))
		r.c.bytes.Add(float64(n))
		r.c.n.Add(int64(n))
		if werr := r.c.lim.WaitN(r.ctx, n); werr != nil && err == nil {
			err = fmt.Errorf("waiting for bandwidth class %s: %w", r.c.name, werr)
		}
	}
	return n, err
}

// Class returns the class the transfer was shaped as.
func (r *Reader) Class() string { return r.c.name }

// Close ends the transfer (once) and closes the underlying reader when it can.
func (r *Reader) Close() error {
	r.once.Do(func() { r.s.end(r.c) })
	if c, ok := r.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

type ctxKey struct{}

// WithClass returns ctx carrying the bandwidth class of the transfers made under it.
func WithClass(ctx context.Context, class string) context.Context {
	return context.WithValue(ctx, ctxKey{}, class)
}

// ClassOf returns the class WithClass put in ctx ("" when none: DefaultClass).
func ClassOf(ctx context.Context) string {
	s, _ := ctx.Value(ctxKey{}).(string)
	return s
}
