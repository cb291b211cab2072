package hostd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/paddockvm/paddock/agent/transport"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/hostd/bwshare"
	"github.com/paddockvm/paddock/hostd/cache"
	"github.com/paddockvm/paddock/hostd/link"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// Config configures a Daemon.
type Config struct {
	// Server is the server's cluster port, host:port; or several server replicas
	// (sharing one PostgreSQL store) separated by commas: the link uses one and moves to
	// another when it dies (link.Dial).
	Server string
	// TLS is the host's mutual TLS configuration (its certificate's Common Name must be
	// Pools.HostID). Required.
	TLS *tls.Config
	// Pools is the vmpool configuration; Pools.HostID is this host's id.
	Pools vmpool.Config
	// LoadInterval is the host load sampling interval (default hostload.DefaultInterval).
	LoadInterval time.Duration
	// MetricsListen, when set, serves /metrics (pools, guests, host load, relay) there.
	MetricsListen string
	// Accel is reported to the server ("kvm" or "tcg").
	Accel string
	// Version is reported to the server.
	Version string
	// ReconnectMax bounds the wait between attempts to reach the server (default 30s).
	ReconnectMax time.Duration
	// Cache is the host's blob cache (docs/dataplane.md; keys host.cache_*). With
	// Cache.Dir set (and Pools.DisableShares not), the daemon registers the capability
	// "stage": it stages task inputs into its guests' input shares and collects their
	// outputs. With Cache.Dir empty it does neither, and the server streams blobs
	// through the agents instead.
	Cache cache.Config
	// Bandwidth shares the host's link among its blob transfers (keys host.bandwidth and
	// host.bandwidth_classes; docs/dataplane.md "Bandwidth shares"). Its zero value
	// shapes nothing and still counts the bytes of each class.
	Bandwidth bwshare.Config
	// PeerFetch (host.peer_fetch) lets the cache fetch a blob from a peer host in Peers
	// that holds it, when that peer is not slower than the server.
	PeerFetch bool
	// Peers (host.peers) are the base URLs of peer hosts' PeerListen, e.g.
	// "http://host2:7074".
	Peers []string
	// PeerListen (host.peer_listen), when set with a cache, serves the cache's blobs
	// read-only to peer hosts there (plain HTTP, no authentication: a private network).
	PeerListen string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Ready, when set, is called once when the daemon serves: the metrics port (if
	// any) is bound and the first attempt to reach the server has ended, registered or
	// failed (the link keeps retrying), or ReadyWait passed while that attempt hangs.
	// paddock host sends systemd READY=1 from it.
	Ready func()
}

// ReadyWait bounds how long Config.Ready waits for the first attempt to reach the
// server (a dial that hangs must not hold systemd's start past its timeout).
const ReadyWait = 30 * time.Second

// sendTimeout bounds one Send on the control stream: a server that stops reading
// makes the daemon drop the stream and reconnect, never wait forever.
const sendTimeout = time.Minute

// CapabilityStage is the Register capability of a host that stages blobs.
const CapabilityStage = "stage"

// Daemon is the host daemon: it runs the pools and links them to the server.
type Daemon struct {
	cfg    Config
	log    *slog.Logger
	counts *vmpool.Counts
	mon    *hostload.Monitor
	mgr    *vmpool.Manager
	reg    *prometheus.Registry
	cc     *grpc.ClientConn
	client hostv1.HostServiceClient
	gone   *goneSet     // guest-gone news for the server; never drops
	cache  *cache.Cache // nil: no staging (Config.Cache.Dir empty or shares disabled)
	shaper *bwshare.Shaper
	dp     *dataPath
	out    *outbox

	relaySessions prometheus.Counter
	relayBytes    *prometheus.CounterVec
	relayErrors   prometheus.Counter
	linkUp        prometheus.Gauge
	outDropped    prometheus.Counter

	readyOnce sync.Once // calls cfg.Ready

	// mu guards the fields below.
	mu        sync.Mutex
	connected bool
	linkErr   error
}

// New checks cfg and builds the daemon over hv and imgs. Bad pools do not make it fail
// (the Manager reports and skips them); a bad host-wide setting does.
func New(cfg Config, hv hypervisor.Hypervisor, imgs vmpool.Images) (*Daemon, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReconnectMax <= 0 {
		cfg.ReconnectMax = 30 * time.Second
	}
	if cfg.Server == "" {
		return nil, errors.New("host.server is empty: give the server's cluster port as host:port (server.cluster_listen of `paddock server`)")
	}
	if _, err := transport.ParseServers("host.server", cfg.Server); err != nil {
		return nil, err
	}
	if cfg.TLS == nil {
		return nil, errors.New("host: no TLS configuration: set host.tls_cert, host.tls_key and host.tls_ca (or run in dev mode)")
	}
	d := &Daemon{cfg: cfg, log: cfg.Logger.With("host", cfg.Pools.HostID), counts: &vmpool.Counts{}, reg: prometheus.NewRegistry(),
		gone: newGoneSet()}
	d.relaySessions = prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_relay_sessions_total", Help: "Agent sessions relayed from guests to the server."})
	d.relayBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_relay_bytes_total", Help: "Bytes relayed, by direction (to_server, to_guest)."}, []string{"direction"})
	d.relayErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_relay_open_errors_total", Help: "Guest sessions that could not be relayed (server unreachable)."})
	d.linkUp = prometheus.NewGauge(prometheus.GaugeOpts{Name: "paddock_host_server_connected", Help: "1 while the host's control stream with the server is up."})
	d.outDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_answers_dropped_total", Help: "Staged/Collected answers dropped because too many waited for the server."})
	d.reg.MustRegister(d.relaySessions, d.relayBytes, d.relayErrors, d.linkUp, d.outDropped, newNICCollector(d.log), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var err error
	if d.mon, err = hostload.New(cfg.LoadInterval, hostload.WithLogger(d.log)); err != nil {
		return nil, err
	}
	if err := d.reg.Register(d.mon); err != nil {
		return nil, fmt.Errorf("registering host load metrics: %w", err)
	}
	d.mgr, err = vmpool.New(cfg.Pools, hv, imgs, vmpool.WithLogger(cfg.Logger), vmpool.WithBacklog(d.counts), vmpool.WithLoad(d.mon),
		vmpool.WithRelay(d), vmpool.WithRegisterer(d.reg), vmpool.WithGuestGone(d.guestGone))
	if err != nil {
		return nil, err
	}
	if d.cc, err = link.Dial(cfg.Server, cfg.TLS); err != nil {
		return nil, err
	}
	d.client = hostv1.NewHostServiceClient(d.cc)
	d.out = newOutbox(d.log, d.outDropped)
	if d.shaper, err = bwshare.New(cfg.Bandwidth, d.log, d.reg); err != nil {
		d.cc.Close()
		return nil, err
	}
	met, err := newDataMetrics(d.reg)
	if err != nil {
		d.cc.Close()
		return nil, err
	}
	switch {
	case cfg.Cache.Dir == "":
		d.log.Info("no host cache (host.cache_dir empty): guests get blobs from the server through their agents")
	case cfg.Pools.DisableShares:
		d.log.Info("shared directories are disabled: the host cache is not used and guests get blobs through their agents")
	default:
		if cfg.Cache.Logger == nil {
			cfg.Cache.Logger = d.log
		}
		blobs := link.NewBlobs(d.client)
		src, err := peerSource(cfg, blobs, d.log, met)
		if err != nil {
			d.cc.Close()
			return nil, err
		}
		ssrc, ssink := cache.Shaped(src, blobs, d.shaper)
		if d.cache, err = cache.Open(cfg.Cache, ssrc, ssink, d.reg); err != nil {
			d.cc.Close()
			return nil, fmt.Errorf("opening the host cache: %w", err)
		}
	}
	var bc blobCache
	if d.cache != nil {
		bc = d.cache
	}
	d.dp = newDataPath(bc, d.mgr.Guest, d.out.put, d.log, met)
	d.dp.classify = d.shaper.Classify
	return d, nil
}

// Cache returns the host cache, nil when the daemon does not stage blobs.
func (d *Daemon) Cache() *cache.Cache { return d.cache }

// Manager returns the pools' manager.
func (d *Daemon) Manager() *vmpool.Manager { return d.mgr }

// Registry returns the daemon's metrics registry (served on MetricsListen).
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }

// Connected reports whether the control stream with the server is up, and the last
// error reaching it.
func (d *Daemon) Connected() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connected, d.linkErr
}

// Run runs the load monitor, the pools and the link with the server until ctx ends;
// then the pools destroy their guests. An unreachable server is logged and retried:
// the pools keep their min_idle guests meanwhile.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var srv *http.Server
	if d.cfg.MetricsListen != "" {
		l, err := net.Listen("tcp", d.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("listening on host.metrics_listen %s: %w", d.cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
	}
	readyAnyway := time.AfterFunc(ReadyWait, d.ready)
	defer readyAnyway.Stop()
	if d.cfg.PeerListen != "" && d.cache != nil {
		psrv, _, err := servePeers(d.cfg.PeerListen, d.cache, d.log)
		if err != nil {
			return err
		}
		defer psrv.Close()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = d.mon.Run(ctx) }()
	go func() { defer wg.Done(); d.linkLoop(ctx) }()
	if d.cache != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.cache.Run(ctx); err != nil && ctx.Err() == nil {
				d.log.Error("host cache stopped", "err", err)
			}
		}()
	}
	err := d.mgr.Run(ctx)
	cancel()
	wg.Wait()
	d.dp.wait()
	if d.cache != nil {
		if cerr := d.cache.Close(); cerr != nil {
			d.log.Warn("closing the host cache", "err", cerr)
		}
	}
	return err
}

func (d *Daemon) setLink(up bool, err error) {
	defer d.ready()
	d.mu.Lock()
	d.connected = up
	if err != nil {
		d.linkErr = err
	}
	d.mu.Unlock()
	if up {
		d.linkUp.Set(1)
	} else {
		d.linkUp.Set(0)
	}
}

// ready calls cfg.Ready the first time (see Config.Ready).
func (d *Daemon) ready() {
	if d.cfg.Ready != nil {
		d.readyOnce.Do(d.cfg.Ready)
	}
}

// linkLoop keeps the control stream open, reconnecting with backoff.
func (d *Daemon) linkLoop(ctx context.Context) {
	backoff := 500 * time.Millisecond
	var lastErr string
	for ctx.Err() == nil {
		start := time.Now()
		err := d.control(ctx)
		d.setLink(false, err)
		d.counts.Replace(nil) // a stale backlog must not keep guests booted
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		if err.Error() != lastErr {
			d.log.Error("no link with the server; retrying; the pools keep running", "server", d.cfg.Server, "err", err, "retry_in", backoff)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, d.cfg.ReconnectMax)
	}
}

func (d *Daemon) pools() []*hostv1.Pool {
	var out []*hostv1.Pool
	cfgs := map[string]vmpool.PoolConfig{}
	for _, p := range d.cfg.Pools.Pools {
		if _, ok := cfgs[p.Name]; !ok {
			cfgs[p.Name] = p
		}
	}
	for _, st := range d.mgr.Pools() {
		c := cfgs[st.Name]
		out = append(out, &hostv1.Pool{Name: st.Name, TaskTypes: st.TaskTypes, MinIdle: uint32(max(c.MinIdle, 0)), Max: uint32(max(c.Max, 0)),
			MaxTasksPerVm: uint32(max(c.MaxTasksPerVM, 0)), State: string(st.State), Error: st.Error, Blocked: st.Blocked, BlockedDetail: st.BlockedDetail})
	}
	return out
}

// CacheSummaryBlobs bounds the cache summary sent with each status: the digests of the
// largest blobs the host cache holds (the server places tasks near their inputs).
const CacheSummaryBlobs = 1024

// SummaryMinGap is the least time between two statuses sent because the cache's summary
// changed (a download started, a blob landed or was evicted): the server learns where a
// blob is within this much instead of with the next periodic status (every 2s), and a
// burst of changes costs one status.
const SummaryMinGap = 100 * time.Millisecond

func (d *Daemon) status() *hostv1.Status {
	st := &hostv1.Status{Pools: d.pools()}
	if d.cache != nil {
		for _, dg := range d.cache.Largest(CacheSummaryBlobs) {
			st.CachedBlobs = append(st.CachedBlobs, string(dg))
		}
	}
	if s, ok := d.mon.Latest(); ok {
		st.Load = &hostv1.Load{CpuPercent: s.CPUPercent, MemAvailableBytes: s.MemAvailableBytes, MemTotalBytes: s.MemTotalBytes,
			NicRxBytesPerSec: s.NICRxBytesPerSec, NicTxBytesPerSec: s.NICTxBytesPerSec, SampledAtUnixMs: s.Time.UnixMilli()}
		u := d.shaper.Usage(time.Now())
		st.Load.TransferCapacityBytesPerSec, st.Load.TransferBytesPerSec, st.Load.Transfers = u.Capacity, u.Rate, uint32(u.Active)
	}
	for _, g := range d.mgr.Snapshot() {
		pg := &hostv1.Guest{Name: g.Name, Pool: g.Pool, State: string(g.State), TasksRun: uint32(g.TasksRun), Running: uint32(g.Running),
			CreatedAtUnixMs: g.Created.UnixMilli(), BootMs: g.BootTime.Milliseconds(), AgentVersion: g.AgentVersion}
		pg.CpuTimeMs = g.CPUTime.Milliseconds() // read every second: the server's sign that a silent guest works
		if g.HaveStats {
			pg.CpuPercent, pg.MemoryBytes, pg.RssBytes = g.CPUPercent, g.MemoryBytes, g.RSSBytes
		}
		st.Guests = append(st.Guests, pg)
	}
	return st
}

// control runs one control stream until it breaks.
func (d *Daemon) control(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	desc, err := d.client.Describe(dctx, &hostv1.DescribeRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("reaching the server's cluster port %s (host.server): %w", d.cfg.Server, err)
	}
	if desc.GetHostId() != d.cfg.Pools.HostID {
		return fmt.Errorf("the server reads host id %q from this host's certificate, but host.id is %q: use a certificate for %q", desc.GetHostId(), d.cfg.Pools.HostID, d.cfg.Pools.HostID)
	}
	cctx, ccancel := context.WithCancelCause(ctx)
	defer ccancel(nil)
	stream, err := d.client.Control(cctx)
	if err != nil {
		return fmt.Errorf("opening the control stream: %w", err)
	}
	capacity := &hostv1.Capacity{Cpus: uint32(runtime.NumCPU())}
	if s, ok := d.mon.Latest(); ok {
		capacity.MemoryBytes = s.MemTotalBytes
	}
	if err := stream.Send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Register{Register: &hostv1.Register{
		HostId: d.cfg.Pools.HostID, ProtocolVersion: 1, Version: d.cfg.Version, Capacity: capacity, Accel: d.cfg.Accel, Pools: d.pools(),
		Capabilities: d.capabilities(), StatsIntervalMs: uint32(d.cfg.Pools.StatsEvery().Milliseconds())}}}); err != nil {
		return fmt.Errorf("registering with the server: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("registering with the server: %w", err)
	}
	regd := first.GetRegistered()
	if regd == nil {
		return fmt.Errorf("registering with the server: it answered %T", first.GetMsg())
	}
	every := time.Duration(regd.GetStatusIntervalMs()) * time.Millisecond
	if every <= 0 {
		every = 2 * time.Second
	}
	d.setLink(true, nil)
	d.log.Info("registered with the server", "server", d.cfg.Server, "server_version", regd.GetServerVersion())
	go func() { // sender
		t := time.NewTicker(every)
		defer t.Stop()
		var lastStatus time.Time
		send := func(m *hostv1.HostMessage) bool {
			stuck := time.AfterFunc(sendTimeout, func() {
				ccancel(fmt.Errorf("sending to the server: no progress for %v (the server does not read the control stream); reconnecting", sendTimeout))
			})
			err := stream.Send(m)
			stuck.Stop()
			if err != nil {
				if context.Cause(cctx) == nil {
					ccancel(fmt.Errorf("sending to the server: %w", err))
				}
				return false
			}
			return true
		}
		status := func() bool {
			lastStatus = time.Now()
			return send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Status{Status: d.status()}})
		}
		if !status() {
			return
		}
		var changes <-chan struct{} // the cache's summary changed: a status soon
		if d.cache != nil {
			changes = d.cache.Changes()
		}
		var soon <-chan time.Time
		for {
			select {
			case <-cctx.Done():
				return
			case <-changes:
				if soon == nil {
					soon = time.After(max(0, SummaryMinGap-time.Since(lastStatus)))
				}
			case <-soon:
				soon = nil
				if !status() {
					return
				}
			case <-d.gone.wake:
				gs := d.gone.take()
				for i, g := range gs {
					if !send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_GuestGone{GuestGone: g}}) {
						d.gone.putBack(gs[i:]) // resend after reconnecting
						return
					}
				}
			case <-d.out.wake:
				ms := d.out.take()
				for i, m := range ms {
					if !send(m) {
						d.out.putBack(ms[i:]) // resend after reconnecting
						return
					}
				}
			case <-t.C:
				if !status() {
					return
				}
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			if c := context.Cause(cctx); c != nil && !errors.Is(c, context.Canceled) {
				return c
			}
			return fmt.Errorf("control stream: %w", err)
		}
		switch m := m.GetMsg().(type) {
		case *hostv1.ServerMessage_Backlog:
			bl := map[string]int{}
			for k, v := range m.Backlog.GetQueued() {
				bl[k] = int(v)
			}
			d.counts.Replace(bl)
		case *hostv1.ServerMessage_TaskEvent:
			e := m.TaskEvent
			var err error
			switch e.GetKind() {
			case hostv1.TaskEvent_KIND_STARTED:
				err = d.mgr.TaskStarted(e.GetGuest())
				d.dp.started(ctx, e) // on its own goroutine
			case hostv1.TaskEvent_KIND_FINISHED:
				d.dp.finished(e) // on its own goroutine
				err = d.mgr.TaskFinished(e.GetGuest())
			}
			if err != nil {
				d.log.Debug("task event for a guest the pools cannot apply", "guest", e.GetGuest(), "task", e.GetTaskId(), "kind", e.GetKind(), "err", err)
			}
		case *hostv1.ServerMessage_Collect:
			d.dp.collect(ctx, m.Collect) // on its own goroutine
		case *hostv1.ServerMessage_TaskSnapshot:
			d.applySnapshot(ctx, m.TaskSnapshot)
		}
	}
}

// capabilities are the optional features the daemon registers with.
func (d *Daemon) capabilities() []string {
	if d.cache != nil {
		return []string{CapabilityStage}
	}
	return nil
}

// guestGone is vmpool's WithGuestGone hook: queue the news for the server (it never
// blocks and never drops: see goneSet).
func (d *Daemon) guestGone(g vmpool.GuestRef, reason string) {
	d.gone.put(&hostv1.GuestGone{Name: g.Name, Pool: g.Pool, Reason: reason})
}

var _ vmpool.Relay = (*Daemon)(nil)

// Serve implements vmpool.Relay: it runs the host half of agent/transport on the
// guest's virtio-serial connection (RESYNC, then everything up to a valid HELLO is
// skipped) and carries each session the guest starts to the server as one Relay stream
// named with the guest's identity as this host knows it (g), never as the guest claims
// it in its HELLO. It returns nil when the guest's stream ends, ctx's error when ctx ends.
func (d *Daemon) Serve(ctx context.Context, g vmpool.GuestRef, conn net.Conn) error {
	h := transport.NewHost(conn, transport.Options{Name: g.HostID, Logger: d.log})
	defer h.Close()
	log := d.log.With("guest", g.Name, "pool", g.Pool)
	for {
		s, err := h.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Debug("guest stream ended", "err", err)
			return nil
		}
		if a, ok := s.RemoteAddr().(transport.Addr); ok && a.Name != "" && a.Name != g.Name {
			log.Warn("guest's hello names another identity; relaying it as the guest this host knows", "hello_name", a.Name)
		}
		d.mgr.SessionOpened(g.Name) // the guest health deadline (host.guest_session_timeout)
		d.relay(ctx, g, s, log)
		d.mgr.SessionClosed(g.Name)
	}
}

var _ vmpool.SessionReporter = (*Daemon)(nil)

// ReportsSessions implements vmpool.SessionReporter: Serve reports every session a
// guest's agent opens, so the pools enforce host.guest_session_timeout.
func (d *Daemon) ReportsSessions() bool { return true }

// relay carries one guest session to the server until either side ends it.
func (d *Daemon) relay(ctx context.Context, g vmpool.GuestRef, s net.Conn, log *slog.Logger) {
	defer s.Close()
	rc, err := link.OpenRelay(ctx, d.client, g.Name, g.Pool)
	if err != nil {
		d.relayErrors.Inc()
		log.Warn("cannot relay the guest's session to the server; the agent will retry", "err", err)
		select { // the agent redials at once; do not spin
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	defer rc.Close()
	d.relaySessions.Inc()
	done := make(chan struct{}, 2)
	go func() {
		n, _ := io.Copy(rc, s)
		d.relayBytes.WithLabelValues("to_server").Add(float64(n))
		done <- struct{}{}
	}()
	go func() {
		n, _ := io.Copy(s, rc)
		d.relayBytes.WithLabelValues("to_guest").Add(float64(n))
		done <- struct{}{}
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	s.Close()
	rc.Close()
	<-done
}
