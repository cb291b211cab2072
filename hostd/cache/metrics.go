package cache

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Tier names, as in LinkResult.Tier and the metrics' tier label.
const (
	TierMemory = "memory"
	TierDisk   = "disk"
	// TierSource is LinkResult.Tier for a miss: the bytes came from the Source.
	TierSource = "source"
)

type metrics struct {
	hits         *prometheus.CounterVec
	misses       prometheus.Counter
	evictions    *prometheus.CounterVec
	bytes        *prometheus.GaugeVec
	fetched      prometheus.Counter
	pending      prometheus.Gauge
	uploadErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_cache_hits_total",
			Help: "Blob references served from the host cache, by tier (memory, disk)."}, []string{"tier"}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_cache_misses_total",
			Help: "Blob references the host cache had to fetch from the server."}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_cache_evictions_total",
			Help: "Blobs evicted from the host cache, by tier."}, []string{"tier"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "paddock_host_cache_bytes",
			Help: "Bytes held (or reserved for downloads in progress) by each host cache tier."}, []string{"tier"}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_cache_fetched_bytes_total",
			Help: "Bytes the host cache fetched from the server."}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "paddock_host_cache_pending_uploads",
			Help: "Output blobs journaled on the host (write policy async) and not yet uploaded."}),
		uploadErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_cache_upload_errors_total",
			Help: "Failed uploads of output blobs (each is retried)."}),
	}
	for _, t := range []string{TierMemory, TierDisk} {
		m.hits.WithLabelValues(t)
		m.evictions.WithLabelValues(t)
		m.bytes.WithLabelValues(t)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.hits, m.misses, m.evictions, m.bytes, m.fetched, m.pending, m.uploadErrors} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, fmt.Errorf("registering host cache metrics: %w (open one Cache per registry)", err)
				}
				return nil, fmt.Errorf("registering host cache metrics: %w", err)
			}
		}
	}
	return m, nil
}
