package vmpool

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a pool that wants more guests does not boot them (label "reason" of
// paddock_vmpool_scale_up_blocked and PoolStatus.Blocked).
const (
	BlockedCPU         = "cpu"          // host CPU above thresholds.cpu_percent
	BlockedMemory      = "memory"       // host memory available below thresholds.min_mem_available_mib
	BlockedNIC         = "nic"          // host NIC throughput above thresholds.nic_bytes_per_sec
	BlockedLoadUnknown = "load_unknown" // thresholds are set but there is no fresh load sample
	BlockedBackoff     = "boot_backoff" // recent boots failed; waiting before the next
	BlockedAtMax       = "at_max"       // the pool has max guests
	BlockedOnlineFirst = "online_first" // a batch pool waits while an online pool waits for room
)

var allBlocked = []string{BlockedCPU, BlockedMemory, BlockedNIC, BlockedLoadUnknown, BlockedBackoff, BlockedAtMax, BlockedOnlineFirst}

// metrics are the Manager's Prometheus metrics (the per-guest ones come from
// guestCollector).
type metrics struct {
	guests       *prometheus.GaugeVec
	up           *prometheus.GaugeVec
	blocked      *prometheus.GaugeVec
	blockedTotal *prometheus.CounterVec
	bootSeconds  *prometheus.HistogramVec
	bootFailures *prometheus.CounterVec
	boots        *prometheus.CounterVec
	lost         *prometheus.CounterVec
	recycled     *prometheus.CounterVec
	tasks        *prometheus.CounterVec
	// startsInFlight and startsWaiting are the host's guest starts holding a slot of
	// max_concurrent_starts and those waiting for one (starts.go).
	startsInFlight, startsWaiting prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		guests: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "paddock_vmpool_guests", Help: "Guests by pool and state (booting, idle, busy, draining, stopping)."}, []string{"pool", "state"}),
		up:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "paddock_vmpool_up", Help: "1 while the pool runs, 0 while it cannot (bad configuration, image missing; see the log)."}, []string{"pool"}),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "paddock_vmpool_scale_up_blocked",
			Help: "1 while the pool wants more guests but does not boot them, by reason: cpu, memory, nic (host above its thresholds), load_unknown, boot_backoff, at_max."}, []string{"pool", "reason"}),
		blockedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_vmpool_scale_up_blocked_total", Help: "Reconcile rounds in which a wanted scale-up was blocked, by reason."}, []string{"pool", "reason"}),
		bootSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "paddock_vmpool_boot_duration_seconds", Help: "Time from the scale-up decision to the guest's ready line.",
			Buckets: []float64{0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180}}, []string{"pool"}),
		bootFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_vmpool_boot_failures_total", Help: "Boots that failed, by stage: create, ready (no ready line in time), stopped (the guest died while booting), health (its stream failed before any task)."}, []string{"pool", "stage"}),
		boots:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_vmpool_boots_total", Help: "Guest boots started."}, []string{"pool"}),
		lost:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_vmpool_guests_lost_total", Help: "Ready guests that went away without the pool stopping them, by reason (crashed, stopped, missing, stream)."}, []string{"pool", "reason"}),
		recycled:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_vmpool_guests_recycled_total", Help: "Guests stopped after max_tasks_per_vm tasks."}, []string{"pool"}),
		tasks:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_vmpool_tasks_started_total", Help: "Tasks started in the pool's guests."}, []string{"pool"}),
		startsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "paddock_vmpool_starts_in_flight",
			Help: "Guest starts under way on the host (create or restore → ready line, template boot → snapshot saved), at most host.max_concurrent_starts."}),
		startsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "paddock_vmpool_starts_waiting",
			Help: "Guest starts waiting for a slot of host.max_concurrent_starts (their guests count as booting)."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.guests, m.up, m.blocked, m.blockedTotal, m.bootSeconds, m.bootFailures, m.boots, m.lost, m.recycled, m.tasks, m.startsInFlight, m.startsWaiting}
}

// guestCollector exports the latest libvirt statistics of every guest.
type guestCollector struct {
	m                                   *Manager
	cpu, mem, rss, rdBytes, wrBytes, up *prometheus.Desc
}

func newGuestCollector(m *Manager) *guestCollector {
	gl := []string{"pool", "guest"}
	dl := []string{"pool", "guest", "disk"}
	return &guestCollector{m: m,
		cpu:     prometheus.NewDesc("paddock_guest_cpu_seconds_total", "CPU time the guest used (libvirt cpu.time).", gl, nil),
		mem:     prometheus.NewDesc("paddock_guest_memory_bytes", "Memory the guest currently has (libvirt balloon.current).", gl, nil),
		rss:     prometheus.NewDesc("paddock_guest_rss_bytes", "Resident set size of the guest's QEMU process (libvirt balloon.rss).", gl, nil),
		rdBytes: prometheus.NewDesc("paddock_guest_block_read_bytes_total", "Bytes the guest read from a disk.", dl, nil),
		wrBytes: prometheus.NewDesc("paddock_guest_block_write_bytes_total", "Bytes the guest wrote to a disk.", dl, nil),
		up:      prometheus.NewDesc("paddock_guest_uptime_seconds", "Seconds since the guest was created.", gl, nil),
	}
}

func (c *guestCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpu, c.mem, c.rss, c.rdBytes, c.wrBytes, c.up} {
		ch <- d
	}
}

func (c *guestCollector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.m.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, g.Uptime.Seconds(), g.Pool, g.Name)
		if g.CPUTime > 0 {
			ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, g.CPUTime.Seconds(), g.Pool, g.Name)
		}
		if !g.HaveStats {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.mem, prometheus.GaugeValue, float64(g.MemoryBytes), g.Pool, g.Name)
		ch <- prometheus.MustNewConstMetric(c.rss, prometheus.GaugeValue, float64(g.RSSBytes), g.Pool, g.Name)
		for _, b := range g.Disks {
			ch <- prometheus.MustNewConstMetric(c.rdBytes, prometheus.CounterValue, float64(b.RdBytes), g.Pool, g.Name, b.Name)
			ch <- prometheus.MustNewConstMetric(c.wrBytes, prometheus.CounterValue, float64(b.WrBytes), g.Pool, g.Name, b.Name)
		}
	}
}
