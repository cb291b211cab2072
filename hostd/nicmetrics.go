package hostd

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shirou/gopsutil/v3/net"
)

// NIC traffic as Prometheus counters. At each scrape nicCollector reads the kernel's
// cumulative byte counters of every interface (gopsutil, /proc/net/dev) and reports
// them as they are: paddock_host_nic_receive_bytes_total{nic} and
// paddock_host_nic_transmit_bytes_total{nic}. Nothing is added up between scrapes, so
// a missed scrape loses nothing and rate() works across daemon restarts; a counter
// that goes back (an interface recreated) is a counter reset, which rate() handles.
// Every interface is listed, loopback and the guests' tap devices included: select
// with the nic label. The gauges paddock_host_nic_{receive,transmit}_bytes_per_second
// (package vmpool/hostload) stay: they are the rate over the last sampling interval,
// summed over the non-loopback interfaces, that the scale-up threshold
// host.thresholds.nic_bytes_per_sec is compared with.

// nicReadTimeout bounds one read of the counters during a scrape.
const nicReadTimeout = 5 * time.Second

// nicCollector is the prometheus.Collector of the per-NIC byte counters.
type nicCollector struct {
	log    *slog.Logger
	rx, tx *prometheus.Desc
	errs   prometheus.Counter
}

var _ prometheus.Collector = (*nicCollector)(nil)

func newNICCollector(log *slog.Logger) *nicCollector {
	return &nicCollector{log: log,
		rx: prometheus.NewDesc("paddock_host_nic_receive_bytes_total", "Bytes received by this network interface (the kernel's counter).", []string{"nic"}, nil),
		tx: prometheus.NewDesc("paddock_host_nic_transmit_bytes_total", "Bytes sent by this network interface (the kernel's counter).", []string{"nic"}, nil),
		errs: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_nic_read_errors_total",
			Help: "Scrapes whose reading of the NIC counters failed (the counters were left out)."}),
	}
}

// Describe implements prometheus.Collector.
func (c *nicCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rx
	ch <- c.tx
	c.errs.Describe(ch)
}

// Collect implements prometheus.Collector: the counters as the kernel has them now.
func (c *nicCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), nicReadTimeout)
	defer cancel()
	nics, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		c.errs.Inc()
		c.log.Warn("reading the NIC counters for /metrics", "err", err)
	}
	for _, n := range nics {
		ch <- prometheus.MustNewConstMetric(c.rx, prometheus.CounterValue, float64(n.BytesRecv), n.Name)
		ch <- prometheus.MustNewConstMetric(c.tx, prometheus.CounterValue, float64(n.BytesSent), n.Name)
	}
	c.errs.Collect(ch)
}
