package vmpool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
)

// GuestState is where a guest is in its life.
type GuestState string

const (
	StateBooting  GuestState = "booting"  // waiting for a start slot, being created, or created with no ready line yet
	StateIdle     GuestState = "idle"     // ready, no task
	StateBusy     GuestState = "busy"     // running tasks
	StateDraining GuestState = "draining" // reached max_tasks_per_vm: finishes its tasks, takes no more
	StateStopping GuestState = "stopping" // being destroyed and cleaned up
)

var allStates = []GuestState{StateBooting, StateIdle, StateBusy, StateDraining, StateStopping}

// GuestInfo is one guest as `paddock vm ls` shows it.
type GuestInfo struct {
	Name  string
	Pool  string
	State GuestState
	// TasksRun counts the tasks started in the guest; Running those not yet finished.
	TasksRun, Running int
	// Created is when the pool decided to boot it (pool clock); Uptime is since then.
	Created time.Time
	Uptime  time.Duration
	// BootTime is the scale-up decision → ready line (0 while booting).
	BootTime time.Duration
	// Restored: the guest was restored from the pool's snapshot; Nonce is the random
	// value its agent drew after taking its identity.
	Restored     bool
	Nonce        string
	AgentVersion string
	// Dir holds the guest's socket, console log and scratch disk.
	Dir string
	// CPUTime is the guest's CPU time so far, read every second (0 before the first
	// reading); the figures below are from the latest libvirt statistics (HaveStats
	// false before the first reading), read every StatsInterval.
	CPUTime     time.Duration
	HaveStats   bool
	CPUPercent  float64 // over the last statistics interval; 100 = one CPU fully busy
	MemoryBytes uint64
	RSSBytes    uint64
	Disks       []hypervisor.BlockStats
}

// PoolState is whether a pool runs.
type PoolState string

const (
	PoolStarting PoolState = "starting"
	PoolRunning  PoolState = "running"
	PoolError    PoolState = "error"   // cannot run now; Error says why (retried unless the configuration itself is bad)
	PoolStopped  PoolState = "stopped" // Run ended
)

// PoolStatus is one pool's state.
type PoolStatus struct {
	Name      string
	State     PoolState
	Error     string
	Image     string // the resolved digest
	TaskTypes []string
	Guests    map[GuestState]int
	// Blocked lists why the pool does not boot guests it wants (BlockedCPU, …), and
	// BlockedDetail says it in words; both empty when it is not blocked.
	Blocked       []string
	BlockedDetail string
	// BootFailures counts consecutive failed boots (0 after a good one).
	BootFailures int
	// Snapshot is the warm-start snapshot's state (warm_start snapshot only): "ready",
	// "building" or "none".
	Snapshot string
}

type guest struct {
	ref        GuestRef
	dir        string
	state      GuestState
	cancel     context.CancelFunc
	createDone chan struct{} // closed once Create has returned (or was never called)
	created    bool          // Create succeeded
	createdAt  time.Time     // wall time Create returned
	decidedAt  time.Time     // wall time of the scale-up decision
	startedAt  time.Time     // pool clock
	idleSince  time.Time     // pool clock
	bootTime   time.Duration
	info       ReadyInfo
	started    int
	running    int
	scratch    *images.Scratch
	restoring  bool // being restored from a snapshot: its domain's events are the restore's (warm.go)
	stats      *hypervisor.DomainStats
	statsAt    time.Time
	cpuPct     float64
	cpuTime    time.Duration // the latest CPU time read, by Stats or by CPUTimes (cpuLoop)
	cpuLooped  bool          // cpuTime comes from CPUTimes (then only from it)
}

type pool struct {
	m    *Manager
	cfg  PoolConfig
	log  *slog.Logger
	wake chan struct{}
	dup  bool

	wg sync.WaitGroup // guest goroutines

	// waiting (online pools) is how many guests the last reconcile wanted for the
	// backlog and could not boot for lack of host room: batch pools defer theirs.
	waiting atomic.Int64

	// mu guards the fields below.
	mu            sync.Mutex
	ctx           context.Context // the pool's run context; nil before run
	state         PoolState
	err           error
	bad           bool // the configuration itself is bad: never retried
	img           images.Image
	types         []string
	guests        map[string]*guest
	failures      int
	nextBoot      time.Time // pool clock
	blocked       []string
	blockedDetail string

	warm warmState // warm_start snapshot (warm.go); has its own lock
}

func newPool(m *Manager, cfg PoolConfig) *pool {
	return &pool{m: m, cfg: cfg, log: m.log.With("pool", cfg.Name), wake: make(chan struct{}, 1), state: PoolStarting, guests: map[string]*guest{}}
}

// fail marks the pool's configuration as bad for good.
func (p *pool) fail(err error) {
	p.state, p.err, p.bad = PoolError, err, true
}

func (p *pool) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pool) run(ctx context.Context) {
	name := p.cfg.Name
	p.mu.Lock()
	bad, err := p.bad, p.err
	p.ctx = ctx
	p.mu.Unlock()
	if bad {
		if !p.dup { // a duplicate's name is the running pool's: leave its gauge alone
			p.m.met.up.WithLabelValues(name).Set(0)
		}
		p.log.Error("pool not started: bad configuration; the other pools keep running", "err", err)
		return
	}
	defer func() {
		p.mu.Lock()
		p.state = PoolStopped
		p.mu.Unlock()
		p.m.met.up.WithLabelValues(name).Set(0)
	}()
	var lastErr string
	for {
		err := p.resolve()
		if err == nil {
			break
		}
		p.mu.Lock()
		p.state, p.err = PoolError, err
		p.mu.Unlock()
		p.m.met.up.WithLabelValues(name).Set(0)
		if err.Error() != lastErr {
			p.log.Error("pool cannot start; retrying; the other pools keep running", "err", err, "retry_every", p.m.cfg.RetryInterval)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.m.cfg.RetryInterval):
		}
	}
	p.loadSnapshotOnDisk(ctx)
	p.m.met.up.WithLabelValues(name).Set(1)
	p.log.Info("pool started", "image", p.img.Digest, "task_types", p.types, "min_idle", p.cfg.MinIdle, "max", p.cfg.Max,
		"vcpus", p.cfg.VCPUs, "memory_mib", p.cfg.MemoryMiB, "idle_timeout", p.cfg.IdleTimeout, "max_tasks_per_vm", p.cfg.MaxTasksPerVM)
	t := time.NewTicker(p.m.cfg.Tick)
	defer t.Stop()
	for {
		p.reconcile()
		select {
		case <-ctx.Done():
			p.shutdown()
			return
		case <-t.C:
		case <-p.wake:
		}
	}
}

// resolve finds the pool's image and checks the pool against it.
func (p *pool) resolve() error {
	img, err := p.m.imgs.Get(p.cfg.Image)
	if err != nil {
		ce := cfgErr(p.cfg.Name, "image", "build the image (paddock image build) or fix the digest (paddock image ls)", "image %q is not usable: %v", p.cfg.Image, err)
		ce.Err = err
		return ce
	}
	types, err := p.cfg.CheckImage(img)
	if err != nil {
		return err
	}
	if err := img.CheckHandlerDisk(); err != nil {
		ce := cfgErr(p.cfg.Name, "image", "rebuild the image (paddock image build) and set the pool's image to the new digest", "image %q is not usable: %v", p.cfg.Image, err)
		ce.Err = err
		return ce
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.img, p.types, p.state, p.err = img, types, PoolRunning, nil
	return nil
}

// shutdown stops every guest and waits for them to be gone.
func (p *pool) shutdown() {
	p.mu.Lock()
	for _, g := range p.guests {
		p.stopGuest(g, "host daemon stopping")
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.log.Info("pool stopped")
}

func randID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// reconcile compares the guests with what the pool wants and acts.
func (p *pool) reconcile() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != PoolRunning || p.ctx.Err() != nil {
		return
	}
	p.warmSnapshot(p.img) // starts building the snapshot before the first guest needs it
	now := p.m.clock.Now()
	counts := map[GuestState]int{}
	var idle []*guest
	for _, g := range p.guests {
		counts[g.state]++
		if g.state == StateIdle {
			idle = append(idle, g)
		}
		if g.state == StateDraining && g.running == 0 {
			p.stopGuest(g, fmt.Sprintf("recycled after %d tasks", g.started))
			p.m.met.recycled.WithLabelValues(p.cfg.Name).Inc()
		}
	}
	backlog := 0
	for _, t := range p.types {
		backlog += p.m.backlog.Backlog(t)
	}
	want := max(p.cfg.MinIdle, backlog)
	spare := counts[StateBooting] + counts[StateIdle]

	// Scale down: idle guests past idle_timeout, oldest idle first, while there are more
	// spare guests than wanted (so never below min_idle).
	if spare > want {
		sort.Slice(idle, func(i, j int) bool { return idle[i].idleSince.Before(idle[j].idleSince) })
		for _, g := range idle {
			if spare <= want || now.Sub(g.idleSince) < p.cfg.IdleTimeout {
				break
			}
			p.stopGuest(g, fmt.Sprintf("idle for %v", now.Sub(g.idleSince).Round(time.Second)))
			spare--
		}
	}

	// Scale up.
	var waiting int // online pools: guests wanted for the backlog that found no room
	defer func() {
		if p.cfg.Class == ClassOnline {
			p.waiting.Store(int64(waiting))
		}
	}()
	var blocked []string
	var detail string
	if short := want - spare; short > 0 {
		need := min(short, p.cfg.Max-len(p.guests))
		floor := min(max(p.cfg.MinIdle-spare, 0), need)
		extra := need - floor
		switch {
		case now.Before(p.nextBoot):
			blocked = []string{BlockedBackoff}
			detail = fmt.Sprintf("%d consecutive boots failed; next boot in %v", p.failures, p.nextBoot.Sub(now).Round(time.Millisecond))
			need = 0
		case need <= 0:
			blocked = []string{BlockedAtMax}
			detail = fmt.Sprintf("wants %d more guests but has max (%d)", short, p.cfg.Max)
		}
		if need > 0 && extra > 0 && p.cfg.Class == ClassBatch {
			// Online pools grow first: a batch pool boots nothing for its backlog
			// while an online pool of the host waits for room.
			if n := p.m.onlineWaiting(); n > 0 {
				blocked = append(blocked, BlockedOnlineFirst)
				if detail != "" {
					detail += "; "
				}
				detail += fmt.Sprintf("online pools wait for room for %d guests: not booting %d guests for the backlog (%d queued) before them", n, extra, backlog)
				need -= extra
				extra = 0
			}
		}
		if need > 0 && extra > 0 {
			// Thresholds stop scale-up for the backlog; the min_idle floor is kept
			// regardless (it is the operator's commitment, and a replacement for a
			// crashed warm guest adds no load beyond what the host already carried).
			if reasons, d := p.m.headroom(); len(reasons) > 0 {
				blocked = append(blocked, reasons...)
				if detail != "" {
					detail += "; "
				}
				detail += fmt.Sprintf("host above its thresholds, not booting %d guests for the backlog (%d queued): %s", extra, backlog, d)
				need -= extra
				waiting = extra
			}
		}
		for range need {
			p.bootGuest(now)
		}
	}
	p.setBlocked(blocked, detail)
	for _, s := range allStates {
		p.m.met.guests.WithLabelValues(p.cfg.Name, string(s)).Set(float64(counts[s]))
	}
}

// setBlocked records why scale-up is blocked, logging when that changes; p.mu held.
func (p *pool) setBlocked(reasons []string, detail string) {
	for _, r := range allBlocked {
		v := 0.0
		for _, b := range reasons {
			if b == r {
				v = 1
				p.m.met.blockedTotal.WithLabelValues(p.cfg.Name, r).Inc()
			}
		}
		p.m.met.blocked.WithLabelValues(p.cfg.Name, r).Set(v)
	}
	key, old := strings.Join(reasons, ","), strings.Join(p.blocked, ",")
	p.blocked, p.blockedDetail = reasons, detail
	if key == old {
		return
	}
	switch {
	case key == "":
		p.log.Info("pool scale-up no longer blocked", "was", old)
	case key == BlockedAtMax || key == BlockedBackoff:
		p.log.Info("pool not scaling up", "reason", key, "detail", detail)
	default:
		p.log.Warn("pool not scaling up", "reason", key, "detail", detail)
	}
}

// bootGuest starts booting one new guest; p.mu held.
func (p *pool) bootGuest(now time.Time) {
	name := p.m.hv.Prefix() + p.cfg.Name + "-" + randID()
	dir := filepath.Join(p.m.cfg.RunDir, name)
	gctx, cancel := context.WithCancel(p.ctx)
	g := &guest{
		ref: GuestRef{HostID: p.m.cfg.HostID, Pool: p.cfg.Name, Name: name, Socket: filepath.Join(dir, socketName)},
		dir: dir, state: StateBooting, cancel: cancel, createDone: make(chan struct{}),
		decidedAt: time.Now(), startedAt: now,
	}
	if !p.m.cfg.DisableShares {
		g.ref.InDir, g.ref.OutDir = filepath.Join(dir, inShareName), filepath.Join(dir, outShareName)
	}
	p.guests[name] = g
	p.m.met.boots.WithLabelValues(p.cfg.Name).Inc()
	p.log.Info("booting guest", "guest", name)
	p.wg.Add(1)
	go p.runGuest(gctx, g, p.img)
}

// runGuest creates the guest, waits for its ready line and hands its connection to the
// relay.
//
// It first waits for one of the host's start slots (Config.MaxConcurrentStarts) and
// holds it until the guest is ready, or has failed and is marked stopping; only then
// does it decide between a restore and a cold boot, so a guest that waited while the
// pool's snapshot was being made is restored from it.
func (p *pool) runGuest(ctx context.Context, g *guest, img images.Image) {
	defer p.wg.Done()
	release, err := p.acquireStart(ctx, g)
	defer release()
	if err != nil { // the guest is being stopped before it started
		close(g.createDone)
		return
	}
	ident, snap, err := p.start(ctx, g, img)
	close(g.createDone)
	if err != nil {
		p.bootFailed(g, "create", err)
		return
	}
	conn, info, err := p.waitReady(ctx, g, ident, snap)
	if err != nil {
		if ctx.Err() == nil {
			p.bootFailed(g, "ready", err)
		}
		return
	}
	ready := p.markReady(g, info)
	release() // after markReady: a guest holding no slot is never seen booting with a domain
	if !ready {
		conn.Close()
		return
	}
	err = p.m.relay.Serve(ctx, g.ref, conn)
	if ctx.Err() != nil {
		return
	}
	p.streamEnded(g, err)
}

// acquireStart waits for a host start slot for g, logging when it has to wait.
func (p *pool) acquireStart(ctx context.Context, g *guest) (func(), error) {
	if release, ok := p.m.starts.tryAcquire(); ok {
		return release, nil
	}
	p.log.Info("guest waits for a start slot", "guest", g.ref.Name, "max_concurrent_starts", p.m.cfg.MaxConcurrentStarts)
	return p.m.starts.acquire(ctx, false)
}

func (p *pool) create(ctx context.Context, g *guest, img images.Image) error {
	spec, err := p.guestSpec(ctx, g, img, "")
	if err != nil {
		return err
	}
	if _, err := p.m.hv.Create(ctx, spec); err != nil {
		return fmt.Errorf("creating guest %s: %w", g.ref.Name, err)
	}
	p.mu.Lock()
	g.created, g.createdAt = true, time.Now()
	p.mu.Unlock()
	return nil
}

// guestSpec makes g's directory, shares and scratch disk (an overlay on scratchBase, or
// on the manager's empty base when "") and returns its domain spec.
func (p *pool) guestSpec(ctx context.Context, g *guest, img images.Image, scratchBase string) (hypervisor.DomainSpec, error) {
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return hypervisor.DomainSpec{}, fmt.Errorf("creating guest directory %s: %w", g.dir, err)
	}
	if err := os.Chmod(g.dir, 0o755); err != nil {
		return hypervisor.DomainSpec{}, fmt.Errorf("making guest directory %s reachable by QEMU: %w", g.dir, err)
	}
	spec := hypervisor.DomainSpec{
		Name: g.ref.Name, VCPUs: p.cfg.VCPUs, MemoryMiB: p.cfg.MemoryMiB, TBCacheMiB: p.cfg.TBCacheMiB, CPUShares: p.cfg.cpuShares(),
		Kernel: img.Kernel(), Initrd: img.Initrd(), Cmdline: GuestCmdline(p.cfg.Cmdline, g.ref.Name),
		Channels:   []hypervisor.Channel{{Name: agent.DefaultPort, SocketPath: g.ref.Socket}},
		ConsoleLog: filepath.Join(g.dir, "console.log"),
		Labels:     map[string]string{LabelPool: p.cfg.Name, LabelHost: p.m.cfg.HostID},
	}
	if g.ref.InDir != "" {
		fss, err := makeShares(g.ref.InDir, g.ref.OutDir, p.m.shareOwner)
		if err != nil {
			return hypervisor.DomainSpec{}, fmt.Errorf("guest %s: %w", g.ref.Name, err)
		}
		spec.Filesystems = fss
	}
	if p.cfg.ScratchMiB > 0 {
		base, size := scratchBase, 0 // an overlay on a template's disk keeps its size
		if base == "" {
			var err error
			if base, err = p.m.scratchBaseFile(); err != nil {
				return hypervisor.DomainSpec{}, err
			}
			size = p.cfg.ScratchMiB
		}
		s, err := images.NewScratch(ctx, g.dir, base, size)
		if err != nil {
			return hypervisor.DomainSpec{}, fmt.Errorf("creating scratch disk for %s: %w", g.ref.Name, err)
		}
		p.mu.Lock()
		g.scratch = s
		p.mu.Unlock()
		spec.Disks = []hypervisor.Disk{{Path: s.Path, Format: images.ScratchFormat, Target: "vda"}}
	}
	// The image's handler disk after the scratch disk (warm.go expects the scratch
	// disk first); the guest finds it by its serial, not its target.
	if d, ok := HandlerDisk(img, fmt.Sprintf("vd%c", 'a'+len(spec.Disks))); ok {
		spec.Disks = append(spec.Disks, d)
	}
	return spec, nil
}

// HandlerDisk returns the disk that attaches img's handler disk (images.HandlerDisk:
// one read-only file shared by every guest of the image) at target, and whether img
// has one (images built before handler disks hold their handlers in the initramfs).
func HandlerDisk(img images.Image, target string) (hypervisor.Disk, bool) {
	hd := img.Manifest.HandlerDisk
	if hd == nil {
		return hypervisor.Disk{}, false
	}
	return hypervisor.Disk{Path: img.HandlerDiskPath(), Format: "raw", Target: target, ReadOnly: true, Shareable: true, Serial: hd.Serial}, true
}

// backoffLocked records a failed boot and sets when the next may start; p.mu held.
func (p *pool) backoffLocked(stage string, err error, name string) {
	p.failures++
	d := p.m.cfg.BootBackoff
	for i := 1; i < p.failures && d < p.m.cfg.MaxBootBackoff; i++ {
		d *= 2
	}
	d = min(d, p.m.cfg.MaxBootBackoff)
	p.nextBoot = p.m.clock.Now().Add(d)
	p.m.met.bootFailures.WithLabelValues(p.cfg.Name, stage).Inc()
	p.log.Error("guest boot failed", "guest", name, "stage", stage, "err", err, "consecutive_failures", p.failures, "backoff", d)
}

func (p *pool) bootFailed(g *guest, stage string, err error) {
	if line := consoleFatal(filepath.Join(g.dir, "console.log")); line != "" {
		// The guest's own reason, e.g. PID 1 could not mount the image's handler disk.
		err = fmt.Errorf("%w (guest console: %s)", err, line)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if g.state == StateStopping {
		return
	}
	p.backoffLocked(stage, err, g.ref.Name)
	p.stopGuest(g, "boot failed")
	p.nudge()
}

// consoleFatal returns the last "paddock-agent: fatal:" line of a guest's console log
// (PID 1's reason for powering off), or "".
func consoleFatal(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(fi.Size()-64<<10, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	last := ""
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, "paddock-agent: fatal:"); i >= 0 {
			last = strings.TrimSpace(l[i:])
		}
	}
	return last
}

func (p *pool) markReady(g *guest, info ReadyInfo) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g.state != StateBooting {
		return false
	}
	now := p.m.clock.Now()
	g.state, g.idleSince, g.info = StateIdle, now, info
	g.bootTime = time.Since(g.decidedAt)
	p.failures, p.nextBoot = 0, time.Time{}
	p.m.met.bootSeconds.WithLabelValues(p.cfg.Name).Observe(g.bootTime.Seconds())
	p.log.Info("guest ready", "guest", g.ref.Name, "boot_time", g.bootTime.Round(time.Millisecond), "agent_version", info.AgentVersion, "guest_boot_ms", info.BootMS)
	p.nudge()
	return true
}

// streamEnded: the relay returned while the guest was not being stopped.
func (p *pool) streamEnded(g *guest, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g.state == StateStopping {
		return
	}
	if err != nil && g.started == 0 {
		p.backoffLocked("health", err, g.ref.Name)
	}
	reason := "its stream ended"
	if err != nil {
		reason = "unhealthy: " + err.Error()
	}
	p.m.met.lost.WithLabelValues(p.cfg.Name, "stream").Inc()
	p.log.Warn("guest lost", "guest", g.ref.Name, "reason", reason, "state", g.state)
	p.stopGuest(g, reason)
	p.nudge()
}

// stopGuest marks g stopping and tears it down in the background: cancel its
// goroutine, destroy the domain, remove its scratch disk and directory, forget it.
// p.mu held.
func (p *pool) stopGuest(g *guest, reason string) {
	if g.state == StateStopping {
		return
	}
	p.log.Info("stopping guest", "guest", g.ref.Name, "state", g.state, "reason", reason, "tasks_run", g.started)
	g.state = StateStopping
	g.cancel()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		<-g.createDone
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.m.hv.Destroy(ctx, g.ref.Name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			p.log.Error("destroying guest", "guest", g.ref.Name, "err", err)
		}
		if f := p.m.onGone; f != nil && g.created {
			f(g.ref, reason)
		}
		p.mu.Lock()
		s := g.scratch
		p.mu.Unlock()
		if s != nil {
			if err := s.Remove(); err != nil {
				p.log.Warn("removing scratch disk", "guest", g.ref.Name, "err", err)
			}
		}
		if err := os.RemoveAll(g.dir); err != nil {
			p.log.Warn("removing guest directory", "guest", g.ref.Name, "err", err)
		}
		p.mu.Lock()
		delete(p.guests, g.ref.Name)
		p.mu.Unlock()
		p.nudge()
	}()
}

// onEvent handles a hypervisor lifecycle event (for any domain).
func (p *pool) onEvent(e hypervisor.Event) {
	if e.Type != hypervisor.EventStopped && e.Type != hypervisor.EventCrashed {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.guests[e.Domain]
	if !ok || g.state == StateStopping || g.restoring {
		return
	}
	reason := string(e.Type)
	if e.Detail != "" {
		reason += " (" + e.Detail + ")"
	}
	p.lostLocked(g, string(e.Type), reason)
}

// lostLocked handles a guest that went away on its own; p.mu held.
func (p *pool) lostLocked(g *guest, kind, reason string) {
	if g.state == StateBooting {
		p.backoffLocked("stopped", errors.New("the guest "+reason+" while booting"), g.ref.Name)
	} else {
		p.m.met.lost.WithLabelValues(p.cfg.Name, kind).Inc()
		p.log.Warn("guest lost; replacing it as needed", "guest", g.ref.Name, "reason", reason, "state", g.state, "running_tasks", g.running)
	}
	p.stopGuest(g, reason)
	p.nudge()
}

// onList reconciles with the hypervisor's list of domains, taken at listStart.
func (p *pool) onList(doms []hypervisor.Domain, listStart time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != PoolRunning || p.ctx.Err() != nil {
		return
	}
	present := map[string]bool{}
	for _, d := range doms {
		present[d.Name] = true
		if d.Labels[LabelHost] != p.m.cfg.HostID || d.Labels[LabelPool] != p.cfg.Name {
			continue
		}
		if _, ok := p.guests[d.Name]; !ok {
			p.log.Warn("destroying a guest of this pool that the pool does not know", "guest", d.Name)
			p.wg.Add(1)
			go func(name string) {
				defer p.wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := p.m.hv.Destroy(ctx, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
					p.log.Error("destroying unknown guest", "guest", name, "err", err)
				}
			}(d.Name)
		}
	}
	for _, g := range p.guests {
		if g.state != StateStopping && g.created && g.createdAt.Before(listStart) && !present[g.ref.Name] {
			p.lostLocked(g, "missing", "missing from the hypervisor")
		}
	}
}

func (p *pool) updateStats(by map[string]hypervisor.DomainStats, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, g := range p.guests {
		s, ok := by[name]
		if !ok {
			continue
		}
		if g.stats != nil && now.After(g.statsAt) {
			g.cpuPct = 100 * float64(s.CPUTime-g.stats.CPUTime) / float64(now.Sub(g.statsAt))
		}
		g.stats, g.statsAt = &s, now
		if !g.cpuLooped { // CPUTimes' figure may come from another source (/proc): not mixed with it
			g.cpuTime = max(g.cpuTime, s.CPUTime)
		}
	}
}

// statsNames are the pool's guests whose statistics refreshStats reads: those that are
// up (idle, busy or draining) and not being restored.
func (p *pool) statsNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for name, g := range p.guests {
		switch g.state {
		case StateIdle, StateBusy, StateDraining:
			if g.created && !g.restoring {
				out = append(out, name)
			}
		}
	}
	return out
}

// updateCPU records the guests' CPU times read by cpuLoop.
func (p *pool) updateCPU(by map[string]time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, g := range p.guests {
		if t, ok := by[name]; ok {
			if !g.cpuLooped {
				g.cpuTime, g.cpuLooped = 0, true
			}
			g.cpuTime = max(g.cpuTime, t)
		}
	}
}

// taskStarted reports ok false when name is not this pool's guest.
func (p *pool) taskStarted(name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.guests[name]
	if !ok {
		return false, nil
	}
	if g.state != StateIdle && g.state != StateBusy {
		return true, fmt.Errorf("task started in guest %s, which is %s: %w", name, g.state, ErrState)
	}
	g.started++
	g.running++
	g.state = StateBusy
	if p.cfg.MaxTasksPerVM > 0 && g.started >= p.cfg.MaxTasksPerVM {
		g.state = StateDraining
	}
	p.m.met.tasks.WithLabelValues(p.cfg.Name).Inc()
	p.nudge()
	return true, nil
}

func (p *pool) guest(name string) (GuestRef, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.guests[name]
	if !ok || g.state == StateStopping {
		return GuestRef{}, false
	}
	return g.ref, true
}

func (p *pool) taskFinished(name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.guests[name]
	if !ok {
		return false, nil
	}
	if g.running == 0 {
		return true, fmt.Errorf("task finished in guest %s, which runs no task: %w", name, ErrState)
	}
	g.running--
	if g.running == 0 {
		switch g.state {
		case StateDraining:
			p.stopGuest(g, fmt.Sprintf("recycled after %d tasks", g.started))
			p.m.met.recycled.WithLabelValues(p.cfg.Name).Inc()
		case StateBusy:
			g.state, g.idleSince = StateIdle, p.m.clock.Now()
		}
	}
	p.nudge()
	return true, nil
}

func (p *pool) snapshot() []GuestInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.m.clock.Now()
	var out []GuestInfo
	for _, g := range p.guests {
		gi := GuestInfo{Name: g.ref.Name, Pool: p.cfg.Name, State: g.state, TasksRun: g.started, Running: g.running,
			Created: g.startedAt, Uptime: now.Sub(g.startedAt), BootTime: g.bootTime, AgentVersion: g.info.AgentVersion, Dir: g.dir,
			Restored: g.info.ID != "", Nonce: g.info.Nonce}
		gi.CPUTime = g.cpuTime
		if s := g.stats; s != nil {
			gi.HaveStats, gi.CPUPercent = true, g.cpuPct
			gi.MemoryBytes, gi.RSSBytes = s.Balloon.CurrentKiB*1024, s.Balloon.RSSKiB*1024
			gi.Disks = append([]hypervisor.BlockStats(nil), s.Blocks...)
		}
		out = append(out, gi)
	}
	return out
}

func (p *pool) status() PoolStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := PoolStatus{Name: p.cfg.Name, State: p.state, Image: p.img.Digest, TaskTypes: p.types, Guests: map[GuestState]int{},
		Blocked: p.blocked, BlockedDetail: p.blockedDetail, BootFailures: p.failures}
	if p.err != nil {
		st.Error = p.err.Error()
	}
	for _, g := range p.guests {
		st.Guests[g.state]++
	}
	st.Snapshot = p.snapshotStatus()
	return st
}

// GuestCmdline is the kernel command line of guest name: the pool's, then
// paddock.id=<name>, which the agent registers under (agent.CmdlineIDKey). The server
// checks that id against the name the host attests for the guest's relayed session.
func GuestCmdline(base, name string) string {
	return strings.TrimSpace(base + " " + agent.CmdlineIDKey + "=" + name)
}
