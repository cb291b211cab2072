package vmpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/vmpool/hostload"
	"github.com/prometheus/client_golang/prometheus"
)

// Labels every guest carries (hypervisor.DomainSpec.Labels).
const (
	LabelPool = "paddock.dev/pool"
	LabelHost = "paddock.dev/host"
)

// socketName is the guest's channel socket in its directory.
const socketName = "agent.sock"

// Manager runs the pools of one host. Create it with New, then Run it.
type Manager struct {
	cfg       Config
	hv        hypervisor.Hypervisor
	imgs      Images
	log       *slog.Logger
	clock     Clock
	backlog   Backlog
	load      Load
	connector Connector
	relay     Relay
	onGone    func(GuestRef, string)
	met       *metrics
	reg       prometheus.Registerer

	pools []*pool // in configuration order, bad ones included

	sess sessions // agent sessions of ready guests (health.go)

	starts *startLimiter // host-wide bound on guests starting at once (starts.go)

	shareOwner *shareOwner // nil: output shares are 0777 (see Config.ShareUser)

	started atomic.Bool

	scratchOnce sync.Once
	scratchBase string
	scratchErr  error
}

// Option configures New.
type Option func(*Manager)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Manager) { m.log = l } }

// WithClock sets the clock of the pools' policies (tests).
func WithClock(c Clock) Option { return func(m *Manager) { m.clock = c } }

// WithBacklog sets where the server's backlog is read (default: none, so pools only
// keep min_idle).
func WithBacklog(b Backlog) Option { return func(m *Manager) { m.backlog = b } }

// WithLoad sets the host load source the thresholds are checked against, usually a
// *hostload.Monitor (which the caller runs). Without one, thresholds that are set block
// scale-up with reason load_unknown.
func WithLoad(l Load) Option { return func(m *Manager) { m.load = l } }

// WithConnector replaces SocketConnector (tests).
func WithConnector(c Connector) Option { return func(m *Manager) { m.connector = c } }

// WithRelay sets what carries a ready guest's stream (default DrainRelay).
func WithRelay(r Relay) Option { return func(m *Manager) { m.relay = r } }

// WithGuestGone sets a function called once for every created guest after the pool has
// destroyed it (crashed, lost, recycled, scaled down, failed, unhealthy, or the daemon
// stopping), with the reason, and at start for every guest a previous run of this host
// id left (destroyed then, or found gone); the host daemon tells the server, which
// requeues the guest's tasks.
// It runs on the guest's teardown goroutine and must not block for long.
func WithGuestGone(f func(g GuestRef, reason string)) Option {
	return func(m *Manager) { m.onGone = f }
}

// WithRegisterer registers the Manager's metrics with reg.
func WithRegisterer(reg prometheus.Registerer) Option { return func(m *Manager) { m.reg = reg } }

// New checks the host-wide configuration (ValidateHost) and returns a Manager. A bad
// pool does not make New fail: Run reports it (log, Pools, paddock_vmpool_up 0) and
// serves the others.
func New(cfg Config, hv hypervisor.Hypervisor, imgs Images, opts ...Option) (*Manager, error) {
	if err := cfg.ValidateHost(); err != nil {
		return nil, err
	}
	if hv == nil || imgs == nil {
		return nil, errors.New("vmpool.New: a hypervisor and an image store are required")
	}
	m := &Manager{cfg: cfg.withDefaults(), hv: hv, imgs: imgs, log: slog.Default(), clock: realClock{},
		backlog: &Counts{}, connector: SocketConnector{}, relay: DrainRelay{}, met: newMetrics()}
	for _, o := range opts {
		o(m)
	}
	m.starts = newStartLimiter(m.cfg.MaxConcurrentStarts, m.met.startsInFlight, m.met.startsWaiting)
	if m.reg != nil {
		for _, c := range append(m.met.collectors(), newGuestCollector(m)) {
			if err := m.reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering vmpool metrics: %w", err)
			}
		}
	}
	if !m.cfg.DisableShares {
		if os.Geteuid() != 0 {
			m.log.Warn("not root: guests' output shares will be world-writable (0777) instead of owned by QEMU's user", "share_user", m.cfg.ShareUser)
		} else if o, err := lookupShareOwner(m.cfg.ShareUser); err != nil {
			m.log.Warn("QEMU's user not found: guests' output shares will be world-writable (0777); set share_user to the user of qemu.conf", "err", err)
		} else {
			m.shareOwner = &o
		}
	}
	seen := map[string]bool{}
	for _, pc := range m.cfg.Pools {
		p := newPool(m, pc.withDefaults())
		if err := pc.Validate(); err != nil {
			p.fail(err)
		} else if seen[pc.Name] {
			p.fail(cfgErr(pc.Name, "name", "give each pool its own name", "two pools are named %q; only the first runs", pc.Name))
			p.dup = true
		} else if n := len(hv.Prefix()) + len(pc.Name) + 9; n > hypervisor.MaxNameLen {
			p.fail(cfgErr(pc.Name, "name", "use a shorter pool name", "guest names %s%s-xxxxxxxx would be %d characters, more than %d", hv.Prefix(), pc.Name, n, hypervisor.MaxNameLen))
		} else if s := len(m.cfg.RunDir) + 1 + n + 1 + len(socketName); s > hypervisor.MaxSocketLen {
			p.fail(cfgErr(pc.Name, "name", "use a shorter pool name or a shorter run_dir", "guest sockets %s/%s%s-xxxxxxxx/%s would be %d bytes, more than the unix socket limit of %d",
				m.cfg.RunDir, hv.Prefix(), pc.Name, socketName, s, hypervisor.MaxSocketLen))
		}
		seen[pc.Name] = true
		m.pools = append(m.pools, p)
	}
	return m, nil
}

// Run cleans up what a previous run with the same host id left (it destroys every
// domain labelled with this HostID and removes the guest directories under RunDir: the simplest safe choice, since a
// guest's session cannot be resumed across host daemon restarts anyway), then runs
// every good pool until ctx ends, and finally destroys all its guests. It returns an
// error only when it cannot work at all (RunDir, listing domains, events); a bad pool is
// logged and reported, never fatal.
func (m *Manager) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("vmpool: Manager.Run called twice")
	}
	if err := os.MkdirAll(m.cfg.RunDir, 0o755); err != nil {
		return fmt.Errorf("creating run_dir %s: %w", m.cfg.RunDir, err)
	}
	if err := os.Chmod(m.cfg.RunDir, 0o755); err != nil {
		return fmt.Errorf("making run_dir %s reachable by QEMU: %w", m.cfg.RunDir, err)
	}
	if err := m.cleanupLeftovers(ctx); err != nil {
		return err
	}
	events, err := m.hv.Events(ctx)
	if err != nil {
		return fmt.Errorf("subscribing to hypervisor events: %w", err)
	}
	var wg sync.WaitGroup
	for _, p := range m.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(ctx)
		}()
	}
	wg.Add(5)
	go func() {
		defer wg.Done()
		m.healthLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		for e := range events {
			for _, p := range m.pools {
				p.onEvent(e)
			}
		}
	}()
	go func() {
		defer wg.Done()
		m.listLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		m.statsLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		m.cpuLoop(ctx)
	}()
	wg.Wait()
	return nil
}

// cleanupLeftovers destroys every domain labelled with this host id and removes the
// guest directories under RunDir. Every guest a previous run left, destroyed now or
// found already gone (its directory remains, its domain does not), is reported through
// WithGuestGone at once, so the server requeues its tasks without waiting for their
// leases to expire.
func (m *Manager) cleanupLeftovers(ctx context.Context) error {
	doms, err := m.hv.List(ctx)
	if err != nil {
		return fmt.Errorf("listing domains to clean up leftovers: %w", err)
	}
	seen := map[string]bool{}
	for _, d := range doms {
		if d.Labels[LabelHost] != m.cfg.HostID {
			continue
		}
		seen[d.Name] = true
		ref := GuestRef{HostID: m.cfg.HostID, Pool: d.Labels[LabelPool], Name: d.Name}
		if err := m.hv.Destroy(ctx, d.Name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			m.log.Error("destroying a guest left by a previous run", "guest", d.Name, "pool", ref.Pool, "err", err)
			m.leftoverGone(ref, "the host daemon restarted and could not adopt or destroy it: "+err.Error())
			continue
		}
		m.log.Info("destroyed a guest left by a previous run", "guest", d.Name, "pool", ref.Pool)
		m.leftoverGone(ref, "the host daemon restarted and destroyed it (a guest's session does not survive a restart)")
	}
	ents, err := os.ReadDir(m.cfg.RunDir)
	if err != nil {
		return fmt.Errorf("reading run_dir %s: %w", m.cfg.RunDir, err)
	}
	for _, e := range ents {
		// Only what the Manager puts there: guest directories and the scratch base.
		if !strings.HasPrefix(e.Name(), m.hv.Prefix()) && e.Name() != ".base" {
			continue
		}
		if e.IsDir() && e.Name() != ".base" && !seen[e.Name()] {
			// A guest of a previous run whose domain died while the daemon was down.
			m.leftoverGone(GuestRef{HostID: m.cfg.HostID, Pool: m.poolOfName(e.Name()), Name: e.Name()},
				"the host daemon restarted and found the guest gone (it stopped while the daemon was down)")
		}
		if err := os.RemoveAll(filepath.Join(m.cfg.RunDir, e.Name())); err != nil {
			m.log.Warn("removing a leftover guest directory", "path", filepath.Join(m.cfg.RunDir, e.Name()), "err", err)
		}
	}
	return nil
}

// leftoverGone reports a guest of a previous run as gone.
func (m *Manager) leftoverGone(g GuestRef, reason string) {
	if m.onGone != nil {
		m.onGone(g, reason)
	}
}

// poolOfName returns the pool a guest name <prefix><pool>-<8 hex> belongs to ("" when
// it does not have that shape).
func (m *Manager) poolOfName(name string) string {
	rest, ok := strings.CutPrefix(name, m.hv.Prefix())
	if !ok || len(rest) < 10 || rest[len(rest)-9] != '-' {
		return ""
	}
	return rest[:len(rest)-9]
}

// listLoop compares the hypervisor's domains with the pools' guests every tick:
// guests that vanished without an event are replaced, unknown guests labelled with
// this host and a pool are destroyed.
func (m *Manager) listLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		doms, err := m.hv.List(ctx)
		if err != nil {
			if ctx.Err() == nil && err.Error() != lastErr {
				m.log.Warn("listing domains", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		for _, p := range m.pools {
			p.onList(doms, start)
		}
	}
}

// statsLoop reads every guest's libvirt statistics each StatsInterval.
func (m *Manager) statsLoop(ctx context.Context) {
	every(ctx, m.cfg.StatsInterval, func() { m.refreshStats(ctx) })
}

// cpuLoop reads every guest's CPU time each cpuEvery, apart from statsLoop: Stats asks
// each guest's QEMU for its balloon, vCPU and block figures, and with forty starved
// guests on two cores one reading took over 20 s, while the CPU times (from the
// cgroups) still come at once. They are what tells the server that a silent guest is
// alive and working (the host vouching for its agent: sched/vouch.go).
func (m *Manager) cpuLoop(ctx context.Context) {
	every(ctx, min(cpuEvery, m.cfg.StatsInterval), func() {
		by, err := m.hv.CPUTimes(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("reading guests' CPU times", "err", err)
			}
			return
		}
		for _, p := range m.pools {
			p.updateCPU(by)
		}
	})
}

// cpuEvery is how often cpuLoop reads the guests' CPU times (StatsInterval if shorter).
const cpuEvery = time.Second

func (m *Manager) refreshStats(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StatsInterval)
	defer cancel()
	// Only guests that are up, one at a time: libvirt's statistics take each domain's
	// job lock while they ask its QEMU for the balloon, vCPU and block figures, and a
	// restore (or a template's save) that found the lock held failed with "cannot
	// acquire state change lock (held by monitor=remoteDispatchConnectGetAllDomainStats)".
	// A guest being booted, restored or stopped is not asked; one call per guest holds
	// one domain's lock at a time, never every domain's for the slowest one.
	var names []string
	for _, p := range m.pools {
		names = append(names, p.statsNames()...)
	}
	by := map[string]hypervisor.DomainStats{}
	for _, n := range names {
		st, err := m.hv.Stats(sctx, n)
		if errors.Is(err, hypervisor.ErrNotFound) {
			continue // gone since: the pool hears of it from events and List
		}
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("reading guest statistics", "guest", n, "err", err)
			}
			if sctx.Err() != nil {
				break
			}
			continue
		}
		for _, s := range st {
			by[s.Name] = s
		}
	}
	now := time.Now()
	for _, p := range m.pools {
		p.updateStats(by, now)
	}
}

// scratchBaseFile returns the empty sparse base image scratch overlays sit on.
func (m *Manager) scratchBaseFile() (string, error) {
	m.scratchOnce.Do(func() {
		dir := filepath.Join(m.cfg.RunDir, ".base")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			m.scratchErr = fmt.Errorf("creating scratch base directory: %w", err)
			return
		}
		p := filepath.Join(dir, "empty.raw")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
		if err == nil {
			err = f.Truncate(1 << 20)
			f.Close()
		}
		if err != nil {
			m.scratchErr = fmt.Errorf("creating scratch base image %s: %w", p, err)
			return
		}
		m.scratchBase = p
	})
	return m.scratchBase, m.scratchErr
}

// headroom returns the reasons the host's load forbids scale-up, with a description.
func (m *Manager) headroom() ([]string, string) {
	th := m.cfg.Thresholds
	if !th.Any() {
		return nil, ""
	}
	if m.load == nil {
		return []string{BlockedLoadUnknown}, "thresholds are set but no host load monitor runs"
	}
	s, ok := m.load.Latest()
	if !ok {
		return []string{BlockedLoadUnknown}, "no host load sample yet"
	}
	if s.Interval > 0 && time.Since(s.Time) > 3*s.Interval+m.cfg.Tick {
		return []string{BlockedLoadUnknown}, fmt.Sprintf("the latest host load sample is %v old", time.Since(s.Time).Round(time.Second))
	}
	bs := th.Exceeded(s)
	if len(bs) == 0 {
		return nil, ""
	}
	var reasons []string
	for _, b := range bs {
		reasons = append(reasons, b.Resource)
	}
	return reasons, hostload.DescribeBreaches(bs)
}

// Snapshot returns every guest of every pool, sorted by pool then name.
func (m *Manager) Snapshot() []GuestInfo {
	var out []GuestInfo
	for _, p := range m.pools {
		out = append(out, p.snapshot()...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Pools returns the status of every configured pool, in configuration order.
func (m *Manager) Pools() []PoolStatus {
	var out []PoolStatus
	for _, p := range m.pools {
		out = append(out, p.status())
	}
	return out
}

// Guest returns the guest called name, unless it is unknown or being stopped.
func (m *Manager) Guest(name string) (GuestRef, bool) {
	for _, p := range m.pools {
		if r, ok := p.guest(name); ok {
			return r, true
		}
	}
	return GuestRef{}, false
}

// TaskStarted records that a task started in guest name: an idle guest becomes busy,
// or draining once it has started max_tasks_per_vm tasks (it takes no more). ErrNotFound
// for an unknown guest, ErrState for one that is booting, draining or stopping.
func (m *Manager) TaskStarted(name string) error {
	for _, p := range m.pools {
		if ok, err := p.taskStarted(name); ok {
			return err
		}
	}
	return fmt.Errorf("task started in guest %s: %w", name, ErrNotFound)
}

// TaskFinished records that a task ended in guest name: with no task left, a draining
// guest is recycled (destroyed; the pool boots a fresh one as needed) and a busy one
// becomes idle.
func (m *Manager) TaskFinished(name string) error {
	for _, p := range m.pools {
		if ok, err := p.taskFinished(name); ok {
			return err
		}
	}
	return fmt.Errorf("task finished in guest %s: %w", name, ErrNotFound)
}

// SyncTasks replaces what TaskStarted and TaskFinished built up with the server's
// view (a resync after the host's link with the server broke and events were lost):
// running maps guest name to the tasks it runs now, assigned to the tasks the server
// has started in it in all (what max_tasks_per_vm counts; it only raises the pool's
// count). A ready guest with tasks becomes busy (draining once it has started
// max_tasks_per_vm), one without becomes idle, and a draining guest without tasks is
// recycled. Guests still booting or stopping, and names no pool knows, are left alone.
func (m *Manager) SyncTasks(running, assigned map[string]int) {
	for _, p := range m.pools {
		p.syncTasks(running, assigned)
	}
}

func (p *pool) syncTasks(running, assigned map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.m.clock.Now()
	for _, g := range p.guests {
		if g.state == StateBooting || g.state == StateStopping {
			continue
		}
		n := max(running[g.ref.Name], 0)
		if a := assigned[g.ref.Name]; a > g.started {
			g.started = a
		}
		g.started = max(g.started, n)
		was := g.state
		g.running = n
		switch {
		case p.cfg.MaxTasksPerVM > 0 && g.started >= p.cfg.MaxTasksPerVM:
			g.state = StateDraining
			if n == 0 {
				p.stopGuest(g, fmt.Sprintf("recycled after %d tasks", g.started))
				p.m.met.recycled.WithLabelValues(p.cfg.Name).Inc()
			}
		case n > 0:
			g.state = StateBusy
		case was != StateIdle:
			g.state, g.idleSince = StateIdle, now
		}
		if g.state != was {
			p.log.Info("guest state resynced with the server", "guest", g.ref.Name, "was", was, "now", g.state, "running", n, "started", g.started)
		}
	}
	p.nudge()
}

// onlineWaiting is how many guests the host's online pools wait to boot for lack of
// room (batch pools defer their backlog's guests while it is not 0).
func (m *Manager) onlineWaiting() int {
	n := 0
	for _, p := range m.pools {
		n += int(p.waiting.Load())
	}
	return n
}
