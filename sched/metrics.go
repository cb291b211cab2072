package sched

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the server's Prometheus metrics, in their own registry.
type metrics struct {
	types           typeLabels // the task type label values
	reg             *prometheus.Registry
	dispatchLatency *prometheus.HistogramVec
	taskDuration    *prometheus.HistogramVec
	leaseExpiries   prometheus.Counter
	reports         *prometheus.CounterVec
	submits         *prometheus.CounterVec
	guestRequeues   prometheus.Counter
	tasksDeleted    *prometheus.CounterVec
	attempts        *prometheus.CounterVec
	refused         *prometheus.CounterVec
	logChunks       *prometheus.CounterVec // by outcome (stored, refused)
	streams         *prometheus.CounterVec // ordered streams opened, by kind (durable, transient)
	vouched         prometheus.Counter     // silent agents kept open on their host's word (vouch.go)
	preemptions     *prometheus.CounterVec // batch tasks preempted for online ones, by type
	handovers       *prometheus.CounterVec // preempted slots handed straight to an online task, by its type
	onlineStarts    *prometheus.CounterVec // online tasks started, by type and sla (met, missed)
	onlineStart     *prometheus.HistogramVec
	tenantMetrics   // by tenant (tenantapi.go)

	// The data plane.
	blobBytes      *prometheus.CounterVec // by port (client, agent, cluster) and direction (in, out)
	staged         *prometheus.CounterVec // by result (ok, error)
	stagedBytes    *prometheus.CounterVec // by source (fetched, cached)
	collects       *prometheus.CounterVec // by result (ok, error, timeout, host_lost)
	collectSeconds prometheus.Histogram
	collectedBytes prometheus.Counter
	gcDeleted      prometheus.Counter
	gcDeletedBytes prometheus.Counter
	gcErrors       prometheus.Counter
	placements     *prometheus.CounterVec // tasks with input blobs, by where they went (local, remote, new)
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		dispatchLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "paddock", Name: "dispatch_latency_seconds",
			Help:    "Time from a task becoming ready (submitted, or its retry backoff over) to its lease.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"type"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "paddock", Name: "task_duration_seconds",
			Help:    "Time from a task's last start (or its submission, if never started) to its terminal state.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 22),
		}, []string{"type", "state"}),
		leaseExpiries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "paddock", Name: "lease_expiries_total", Help: "Leases that expired (agent lost or task hung).",
		}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "paddock", Name: "reports_total", Help: "Result reports from agents by outcome (accepted, duplicate, superseded, rejected).",
		}, []string{"outcome"}),
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "paddock", Name: "submits_total", Help: "Task submissions by result (created, existing).",
		}, []string{"result"}),
	}
	m.tasksDeleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "tasks_deleted_total", Help: "Finished tasks deleted past their retention (server.task_retention), by final state.",
	}, []string{"state"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "attempts_total",
		Help: "Attempts ended, by the state they moved their task to (queued: retried) and failure kind (\"\" for a success; none: a failure without a kind).",
	}, []string{"state", "failure_kind"})
	m.guestRequeues = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "paddock", Name: "guest_gone_requeues_total", Help: "Tasks requeued at once because their guest's host reported the guest gone.",
	})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "agent_sessions_refused_total", Help: "Refusals by reason: identity (an agent claimed an id other than its host-attested guest), limits (an agent declared more than a server limit), lease_secret (an agent message without its lease's secret), client_token (a client API call without the client token, refused before its body was read).",
	}, []string{"reason"})
	m.streams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "streams_opened_total", Help: "Ordered task streams opened (TaskService.Stream), by kind (durable, transient).",
	}, []string{"kind"})
	m.preemptions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "preemptions_total", Help: "Batch tasks preempted (stopped and requeued, the attempt not charged) to give their slot to an online task, by type.",
	}, []string{"type"})
	m.handovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "preempt_handovers_total",
		Help: "Online tasks leased straight into the slot of the batch task preempted for them (assigned behind the cancel, no heartbeat waited for), by the online task's type.",
	}, []string{"type"})
	m.onlineStarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "online_starts_total",
		Help: "Online tasks started, by type and whether their submit-to-start latency met the type's SLA (server.online_sla): sla=met or missed. Attainment = met / (met + missed).",
	}, []string{"type", "sla"})
	m.onlineStart = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "paddock", Name: "online_start_seconds", Help: "Submit-to-start latency of online tasks (to the agent's acknowledgement), by type.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
	}, []string{"type"})
	m.vouched = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "paddock", Name: "agent_silences_vouched_total",
		Help: "Agents silent past the agent timeout whose sessions and leases were kept because their host daemon reported their guest running and using CPU (counted once per silence; server.vouched_timeout).",
	})
	m.reg.MustRegister(m.vouched)
	m.reg.MustRegister(m.streams, m.preemptions, m.handovers, m.onlineStarts, m.onlineStart)
	m.blobBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "blob_bytes_total", Help: "Bytes of blobs stored (in) and served (out), by port (client: /v1/blobs, agent: agent ReadBlob/WriteBlob, cluster: host ReadBlob/WriteBlob).",
	}, []string{"port", "direction"})
	m.staged = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "staged_total", Help: "Input stagings hosts reported (Staged), by result (ok, error).",
	}, []string{"result"})
	m.stagedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "staged_bytes_total", Help: "Bytes of inputs hosts staged, by source (fetched from the server, cached on the host).",
	}, []string{"source"})
	m.collects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "collects_total", Help: "Output collections asked of hosts (Collect), by result (ok, error, timeout, host_lost).",
	}, []string{"result"})
	m.collectSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "paddock", Name: "collect_seconds", Help: "Time from a Collect to the host's Collected.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 22),
	})
	m.collectedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "paddock", Name: "collected_bytes_total", Help: "Bytes of output files hosts collected.",
	})
	m.gcDeleted = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "paddock", Name: "blob_gc_deleted_total", Help: "Blobs deleted by retention (unused and older than server.blob_retention).",
	})
	m.gcDeletedBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "paddock", Name: "blob_gc_deleted_bytes_total", Help: "Bytes of blobs deleted by retention.",
	})
	m.gcErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "paddock", Name: "blob_gc_errors_total", Help: "Blobs retention could not check or delete (and failed listings).",
	})
	m.tenantMetrics = newTenantMetrics(m.reg)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "paddock", Name: "build_info", Help: "Always 1; its labels say which Paddock version and Go runtime serve.",
		ConstLabels: prometheus.Labels{"version": s.cfg.Version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	m.logChunks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "log_chunks_total", Help: "Live log chunks from agents by outcome: stored, refused (the agent does not hold the chunk's lease, or its secret is wrong).",
	}, []string{"outcome"})
	m.reg.MustRegister(buildInfo, m.logChunks)
	m.placements = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "paddock", Name: "locality_placements_total",
		Help: "Tasks with input blobs placed by locality, by where: local (a host holding them), remote (another host, after server.locality_delay), new (no host held them: the host caching the fewest blobs, or another after the delay).",
	}, []string{"where"})
	m.reg.MustRegister(m.placements)
	m.reg.MustRegister(m.blobBytes, m.staged, m.stagedBytes, m.collects, m.collectSeconds, m.collectedBytes, m.gcDeleted, m.gcDeletedBytes, m.gcErrors)
	m.reg.MustRegister(m.dispatchLatency, m.taskDuration, m.leaseExpiries, m.reports, m.submits, m.guestRequeues, m.tasksDeleted, m.attempts, m.refused,
		&stateCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var (
	queueDepthDesc = prometheus.NewDesc("paddock_tasks",
		"Live tasks by type and state (queued, leased, running): the queue depth. Finished tasks are counted by paddock_task_duration_seconds_count{type,state}.", []string{"type", "state"}, nil)
	agentsDesc    = prometheus.NewDesc("paddock_agents", "Agents by state (connected, lost).", []string{"state"}, nil)
	slotsDesc     = prometheus.NewDesc("paddock_agent_slots", "Slots of connected agents by task type, and how many are busy.", []string{"type", "busy"}, nil)
	typeSlotsDesc = prometheus.NewDesc("paddock_agent_type_slots",
		"Each connected agent's current limit per task type, from its concurrency allocator (the server dispatches the type to the agent only below it).", []string{"agent", "type"}, nil)
	typeRunDesc = prometheus.NewDesc("paddock_agent_type_running",
		"Tasks of each type leased to each connected agent and not yet reported.", []string{"agent", "type"}, nil)
	typeMinDesc = prometheus.NewDesc("paddock_agent_type_min_slots",
		"Each connected agent's guaranteed minimum per task type.", []string{"agent", "type"}, nil)
	totalSlotsDesc = prometheus.NewDesc("paddock_agent_total_slots",
		"Each connected agent's total slots, shared among its task types.", []string{"agent"}, nil)
	queueDelayDesc = prometheus.NewDesc("paddock_queue_delay_seconds",
		"Queuing delay per task type as sent to the agents' allocators: the longer of the oldest ready task's age and the longest wait of the tasks leased in the last heartbeat interval.", []string{"type"}, nil)
)

// stateCollector reads queue depth from the store and agents from the registry at scrape time.
type stateCollector struct{ s *Server }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- agentsDesc
	ch <- slotsDesc
	ch <- typeSlotsDesc
	ch <- typeRunDesc
	ch <- typeMinDesc
	ch <- totalSlotsDesc
	ch <- queueDelayDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if counts, err := c.s.st.Counts(ctx); err == nil {
		type key struct{ typ, state string }
		depth := map[key]int64{}
		for _, n := range counts {
			depth[key{c.s.metrics.types.label(n.Type), string(n.State)}] += n.N
		}
		for k, n := range depth {
			ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), k.typ, k.state)
		}
	} else {
		ch <- prometheus.NewInvalidMetric(queueDepthDesc, err)
	}
	c.s.agents.mu.Lock()
	byState := map[string]int{agentConnected: 0, agentLost: 0}
	slots, busy := map[string]int{}, map[string]int{}
	var per []prometheus.Metric // per agent and type, sent after the lock is released
	for _, a := range c.s.agents.byID {
		byState[a.state]++
		if a.state != agentConnected {
			continue
		}
		for n, ts := range a.types {
			slots[n] += ts.slots
			busy[n] += ts.running
			per = append(per, prometheus.MustNewConstMetric(typeSlotsDesc, prometheus.GaugeValue, float64(ts.slots), a.id, n),
				prometheus.MustNewConstMetric(typeRunDesc, prometheus.GaugeValue, float64(ts.running), a.id, n),
				prometheus.MustNewConstMetric(typeMinDesc, prometheus.GaugeValue, float64(ts.min), a.id, n))
		}
		if a.total > 0 {
			per = append(per, prometheus.MustNewConstMetric(totalSlotsDesc, prometheus.GaugeValue, float64(a.total), a.id))
		}
	}
	c.s.agents.mu.Unlock()
	for _, m := range per {
		ch <- m
	}
	for _, qd := range c.s.QueueDelays() {
		if l := c.s.metrics.types.label(qd.Type); l != otherType {
			ch <- prometheus.MustNewConstMetric(queueDelayDesc, prometheus.GaugeValue, qd.Delay.Seconds(), l)
		}
	}
	for st, n := range byState {
		ch <- prometheus.MustNewConstMetric(agentsDesc, prometheus.GaugeValue, float64(n), st)
	}
	for t, n := range slots {
		ch <- prometheus.MustNewConstMetric(slotsDesc, prometheus.GaugeValue, float64(n-busy[t]), t, "false")
		ch <- prometheus.MustNewConstMetric(slotsDesc, prometheus.GaugeValue, float64(busy[t]), t, "true")
	}
}

// MaxMetricTypes bounds the distinct task type label values on /metrics: clients name
// task types freely; past this many the others are counted under "other".
const MaxMetricTypes = 256

// otherType is the label of the task types past MaxMetricTypes.
const otherType = "other"

// typeLabels admits the first MaxMetricTypes task types seen as label values.
type typeLabels struct {
	mu   sync.Mutex
	seen map[string]bool
}

// label returns typ, or "other" once MaxMetricTypes other types have labels.
func (l *typeLabels) label(typ string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[typ] {
		return typ
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	if len(l.seen) >= MaxMetricTypes || typ == otherType {
		return otherType
	}
	l.seen[typ] = true
	return typ
}
