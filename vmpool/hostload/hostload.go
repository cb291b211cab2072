package hostload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/mem"
	"github.com/shirou/gopsutil/v3/net"
)

// Counters are the host's cumulative counters and current memory figures at one moment.
type Counters struct {
	// CPUBusy and CPUTotal are seconds summed over all CPUs since boot (guest time is
	// already inside user time on Linux and is not counted twice).
	CPUBusy, CPUTotal float64
	// MemTotal and MemAvailable are bytes (MemAvailable as the kernel estimates it).
	MemTotal, MemAvailable uint64
	// NICRx and NICTx are bytes received and sent since boot, summed over every
	// interface except loopback.
	NICRx, NICTx uint64
}

// Source reads Counters. SystemSource reads the real host; tests script their own.
type Source interface {
	Read(ctx context.Context) (Counters, error)
}

// SystemSource returns the Source that reads this host through gopsutil. Interfaces
// named in exclude (besides "lo", always excluded) are left out of the NIC sums, e.g.
// the bridges and tap devices of guests.
func SystemSource(exclude ...string) Source {
	ex := map[string]bool{"lo": true}
	for _, e := range exclude {
		ex[e] = true
	}
	return systemSource{exclude: ex}
}

type systemSource struct{ exclude map[string]bool }

func (s systemSource) Read(ctx context.Context) (Counters, error) {
	var c Counters
	times, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return c, fmt.Errorf("reading CPU times: %w", err)
	}
	if len(times) != 1 {
		return c, fmt.Errorf("reading CPU times: got %d entries, want 1 (all CPUs)", len(times))
	}
	t := times[0]
	// As gopsutil's own cpu.Percent: guest time is part of user time on Linux.
	c.CPUTotal = t.User + t.System + t.Idle + t.Nice + t.Iowait + t.Irq + t.Softirq + t.Steal
	c.CPUBusy = c.CPUTotal - t.Idle - t.Iowait
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return c, fmt.Errorf("reading memory: %w", err)
	}
	c.MemTotal, c.MemAvailable = vm.Total, vm.Available
	nics, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		return c, fmt.Errorf("reading NIC counters: %w", err)
	}
	for _, n := range nics {
		if s.exclude[n.Name] {
			continue
		}
		c.NICRx += n.BytesRecv
		c.NICTx += n.BytesSent
	}
	return c, nil
}

// Sample is the host's load over one interval.
type Sample struct {
	// Time is when the second of the two readings was taken; Interval is the time
	// between them.
	Time     time.Time
	Interval time.Duration
	// CPUPercent is the busy share of all CPUs over the interval, 0–100.
	CPUPercent float64
	// MemAvailableBytes and MemTotalBytes are from the second reading.
	MemAvailableBytes, MemTotalBytes uint64
	// NICRxBytesPerSec and NICTxBytesPerSec are throughput rates over the interval.
	NICRxBytesPerSec, NICTxBytesPerSec float64
}

// Compute derives a Sample from two readings taken at t0 and t1. Counters that went
// backwards (an interface that went away, a counter wrap) count as zero throughput.
func Compute(prev, cur Counters, t0, t1 time.Time) Sample {
	s := Sample{Time: t1, Interval: t1.Sub(t0), MemAvailableBytes: cur.MemAvailable, MemTotalBytes: cur.MemTotal}
	if dt := cur.CPUTotal - prev.CPUTotal; dt > 0 {
		busy := cur.CPUBusy - prev.CPUBusy
		s.CPUPercent = min(100, max(0, 100*busy/dt))
	}
	if secs := s.Interval.Seconds(); secs > 0 {
		if cur.NICRx >= prev.NICRx {
			s.NICRxBytesPerSec = float64(cur.NICRx-prev.NICRx) / secs
		}
		if cur.NICTx >= prev.NICTx {
			s.NICTxBytesPerSec = float64(cur.NICTx-prev.NICTx) / secs
		}
	}
	return s
}

// Thresholds say when the host is too loaded to boot more guests. A zero field is no
// limit.
type Thresholds struct {
	// CPUPercent: scale-up stops while the host's CPU busy percent is above it (0–100).
	CPUPercent float64 `mapstructure:"cpu_percent" json:"cpu_percent,omitempty" yaml:"cpu_percent,omitempty"`
	// MinMemAvailableMiB: scale-up stops while less memory than this is available.
	MinMemAvailableMiB uint64 `mapstructure:"min_mem_available_mib" json:"min_mem_available_mib,omitempty" yaml:"min_mem_available_mib,omitempty"`
	// NICBytesPerSec: scale-up stops while received plus sent bytes per second are
	// above it.
	NICBytesPerSec float64 `mapstructure:"nic_bytes_per_sec" json:"nic_bytes_per_sec,omitempty" yaml:"nic_bytes_per_sec,omitempty"`
}

// Validate checks the ranges; errors name the configuration key.
func (t Thresholds) Validate() error {
	if t.CPUPercent < 0 || t.CPUPercent > 100 {
		return fmt.Errorf("invalid thresholds.cpu_percent: %v is not a percentage (fix: use a value in (0, 100], or 0 for no limit)", t.CPUPercent)
	}
	if t.NICBytesPerSec < 0 {
		return fmt.Errorf("invalid thresholds.nic_bytes_per_sec: %v is negative (fix: use a rate in bytes per second, or 0 for no limit)", t.NICBytesPerSec)
	}
	return nil
}

// Any reports whether any limit is set.
func (t Thresholds) Any() bool {
	return t.CPUPercent > 0 || t.MinMemAvailableMiB > 0 || t.NICBytesPerSec > 0
}

// Resources named in a Breach.
const (
	ResourceCPU    = "cpu"
	ResourceMemory = "memory"
	ResourceNIC    = "nic"
)

// Breach is one limit the host is over.
type Breach struct {
	Resource string // ResourceCPU, ResourceMemory or ResourceNIC
	Detail   string // e.g. "cpu 93.1% above thresholds.cpu_percent 80%"
}

// Exceeded returns the limits s is over, in the order cpu, memory, nic.
func (t Thresholds) Exceeded(s Sample) []Breach {
	var out []Breach
	if t.CPUPercent > 0 && s.CPUPercent > t.CPUPercent {
		out = append(out, Breach{ResourceCPU, fmt.Sprintf("cpu %.1f%% above thresholds.cpu_percent %g%%", s.CPUPercent, t.CPUPercent)})
	}
	if t.MinMemAvailableMiB > 0 && s.MemAvailableBytes < t.MinMemAvailableMiB<<20 {
		out = append(out, Breach{ResourceMemory, fmt.Sprintf("memory available %d MiB below thresholds.min_mem_available_mib %d MiB", s.MemAvailableBytes>>20, t.MinMemAvailableMiB)})
	}
	if nic := s.NICRxBytesPerSec + s.NICTxBytesPerSec; t.NICBytesPerSec > 0 && nic > t.NICBytesPerSec {
		out = append(out, Breach{ResourceNIC, fmt.Sprintf("nic %.0f B/s above thresholds.nic_bytes_per_sec %.0f B/s", nic, t.NICBytesPerSec)})
	}
	return out
}

// DescribeBreaches joins the details of bs with "; ".
func DescribeBreaches(bs []Breach) string {
	var parts []string
	for _, b := range bs {
		parts = append(parts, b.Detail)
	}
	return strings.Join(parts, "; ")
}

// DefaultInterval is the sampling interval when none is configured.
const DefaultInterval = 5 * time.Second

// Monitor samples a Source every interval and keeps the latest Sample. It is a
// prometheus.Collector of the paddock_host_* gauges. Safe for concurrent use.
type Monitor struct {
	src      Source
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	descCPU, descMemAvail, descMemTotal, descRx, descTx, descErrs *prometheus.Desc

	// mu guards the fields below.
	mu       sync.Mutex
	prev     Counters
	prevTime time.Time
	havePrev bool
	latest   Sample
	have     bool
	errs     uint64
	lastErr  error
}

var _ prometheus.Collector = (*Monitor)(nil)

// Option configures New.
type Option func(*Monitor)

// WithSource replaces SystemSource() (tests).
func WithSource(s Source) Option { return func(m *Monitor) { m.src = s } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Monitor) { m.log = l } }

// WithNow replaces time.Now (tests).
func WithNow(now func() time.Time) Option { return func(m *Monitor) { m.now = now } }

// New returns a Monitor sampling every interval (0: DefaultInterval).
func New(interval time.Duration, opts ...Option) (*Monitor, error) {
	if interval < 0 {
		return nil, fmt.Errorf("invalid host load interval %v (fix: use a positive duration such as 5s)", interval)
	}
	if interval == 0 {
		interval = DefaultInterval
	}
	m := &Monitor{src: SystemSource(), interval: interval, log: slog.Default(), now: time.Now}
	for _, o := range opts {
		o(m)
	}
	m.descCPU = prometheus.NewDesc("paddock_host_cpu_percent", "Host CPU busy percent (all CPUs) over the last sampling interval.", nil, nil)
	m.descMemAvail = prometheus.NewDesc("paddock_host_memory_available_bytes", "Host memory available (kernel estimate).", nil, nil)
	m.descMemTotal = prometheus.NewDesc("paddock_host_memory_total_bytes", "Host memory in total.", nil, nil)
	m.descRx = prometheus.NewDesc("paddock_host_nic_receive_bytes_per_second", "Bytes received per second over all non-loopback NICs over the last interval.", nil, nil)
	m.descTx = prometheus.NewDesc("paddock_host_nic_transmit_bytes_per_second", "Bytes sent per second over all non-loopback NICs over the last interval.", nil, nil)
	m.descErrs = prometheus.NewDesc("paddock_host_load_errors_total", "Host load readings that failed.", nil, nil)
	return m, nil
}

// Interval returns the sampling interval.
func (m *Monitor) Interval() time.Duration { return m.interval }

// Sample reads the source once. The first reading only primes the counters and
// returns ok false; every later one computes a Sample over the time since the previous
// reading, stores it as Latest and returns it.
func (m *Monitor) Sample(ctx context.Context) (s Sample, ok bool, err error) {
	c, err := m.src.Read(ctx)
	t := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.errs++
		m.lastErr = err
		return Sample{}, false, err
	}
	if m.havePrev {
		s = Compute(m.prev, c, m.prevTime, t)
		m.latest, m.have, ok = s, true, true
	}
	m.prev, m.prevTime, m.havePrev = c, t, true
	return s, ok, nil
}

// Latest returns the newest Sample; ok is false before two readings succeeded.
func (m *Monitor) Latest() (Sample, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest, m.have
}

// Run samples every interval until ctx ends (then it returns nil). A failed reading is
// logged (once per distinct error) and counted; the previous Sample stays in place.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	var lastMsg string
	for {
		if _, _, err := m.Sample(ctx); err != nil && !errors.Is(err, context.Canceled) {
			if err.Error() != lastMsg {
				m.log.Error("reading host load", "err", err)
				lastMsg = err.Error()
			}
		} else if err == nil {
			lastMsg = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Describe implements prometheus.Collector.
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.descCPU, m.descMemAvail, m.descMemTotal, m.descRx, m.descTx, m.descErrs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the gauges of the latest Sample (none
// before the first Sample) and the error counter.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	s, have, errs := m.latest, m.have, m.errs
	m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.descErrs, prometheus.CounterValue, float64(errs))
	if !have {
		return
	}
	ch <- prometheus.MustNewConstMetric(m.descCPU, prometheus.GaugeValue, s.CPUPercent)
	ch <- prometheus.MustNewConstMetric(m.descMemAvail, prometheus.GaugeValue, float64(s.MemAvailableBytes))
	ch <- prometheus.MustNewConstMetric(m.descMemTotal, prometheus.GaugeValue, float64(s.MemTotalBytes))
	ch <- prometheus.MustNewConstMetric(m.descRx, prometheus.GaugeValue, s.NICRxBytesPerSec)
	ch <- prometheus.MustNewConstMetric(m.descTx, prometheus.GaugeValue, s.NICTxBytesPerSec)
}
