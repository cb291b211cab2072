package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Libvirt is the Hypervisor backed by a libvirt connection. It is safe for concurrent
// use. Close it when done.
type Libvirt struct {
	cfg        Config
	log        *slog.Logger
	accel      AccelDecision
	domainType string // "kvm", "qemu", or "test" on libvirt's test driver
	procDir    string // QEMU pid files CPUTimes reads with /proc ("": ask libvirt; proccpu.go)

	// connMu guards conn and callbackID: a reconnect (reconnect.go) replaces them.
	connMu     sync.RWMutex
	conn       *libvirt.Connect
	callbackID int

	// dial opens a connection (libvirt.NewConnect; tests replace it); reconnectMin
	// and reconnectMax bound the wait between reconnect attempts.
	dial                       func(uri string) (*libvirt.Connect, error)
	reconnectMin, reconnectMax time.Duration
	retired                    func() // tests: called once a replaced connection is closed

	// mu guards the fields below.
	mu           sync.Mutex
	subs         map[*subscriber]struct{}
	closed       bool
	done         chan struct{} // closed by Close
	reconnecting bool          // a reconnect loop runs
	reconnects   int           // connections replaced since Connect
}

var _ Hypervisor = (*Libvirt)(nil)

// Opt configures Connect.
type Opt func(*options)

type options struct {
	log         *slog.Logger
	cpuinfoPath string
	kvmDevice   string
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Opt { return func(o *options) { o.log = l } }

// WithHostProbe overrides where acceleration detection looks (default /proc/cpuinfo and
// /dev/kvm); tests point it at fixtures.
func WithHostProbe(cpuinfoPath, kvmDevice string) Opt {
	return func(o *options) { o.cpuinfoPath, o.kvmDevice = cpuinfoPath, kvmDevice }
}

var (
	eventLoopOnce sync.Once
	eventLoopErr  error
)

// startEventLoop registers libvirt's default event loop implementation and runs it in a
// goroutine for the life of the process. It must happen before the first connection is
// opened for that connection to deliver events.
func startEventLoop(log *slog.Logger) error {
	eventLoopOnce.Do(func() {
		if eventLoopErr = libvirt.EventRegisterDefaultImpl(); eventLoopErr != nil {
			return
		}
		go func() {
			for {
				if err := libvirt.EventRunDefaultImpl(); err != nil {
					log.Error("libvirt event loop iteration failed", "err", err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	})
	return eventLoopErr
}

// Connect validates cfg, decides the acceleration (before libvirt is called: accel kvm
// where KVM cannot work is a *FieldError naming hypervisor.accel), opens the libvirt
// connection and subscribes to lifecycle events. An unreachable URI is ErrUnavailable.
func Connect(ctx context.Context, cfg Config, opts ...Opt) (*Libvirt, error) {
	o := options{log: slog.Default(), cpuinfoPath: DefaultCPUInfoPath, kvmDevice: DefaultKVMDevice}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var accel AccelDecision
	if isTestURI(cfg.URI) {
		// libvirt's test driver emulates nothing: its domains are type "test".
		accel = AccelDecision{Accel: AccelTCG, DomainType: "test", Reason: "libvirt test driver (" + cfg.URI + "): domains are simulated"}
	} else {
		var err error
		if accel, err = ChooseAccel(cfg.Accel, ProbeHost(o.cpuinfoPath, o.kvmDevice)); err != nil {
			return nil, err
		}
	}
	if err := startEventLoop(o.log); err != nil {
		return nil, fmt.Errorf("%w: starting libvirt's event loop: %w", ErrUnavailable, err)
	}
	type result struct {
		conn *libvirt.Connect
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := libvirt.NewConnect(cfg.URI)
		ch <- result{c, err}
	}()
	var conn *libvirt.Connect
	select {
	case <-ctx.Done():
		go func() { // close the connection if it opens after all
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("%w: connecting to libvirt at %s (hypervisor.uri): %w", ErrUnavailable, cfg.URI, ctx.Err())
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("%w: connecting to libvirt at %s (hypervisor.uri; fix: check the URI, and that libvirtd and virtlogd run — `make setup` starts them): %w",
				ErrUnavailable, cfg.URI, r.err)
		}
		conn = r.conn
	}
	l := &Libvirt{cfg: cfg, log: o.log, accel: accel, domainType: accel.DomainType, subs: map[*subscriber]struct{}{}, done: make(chan struct{}),
		dial: libvirt.NewConnect, reconnectMin: time.Second, reconnectMax: 30 * time.Second, procDir: procRunDir(cfg.URI)}
	if err := l.use(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%w: subscribing to libvirt lifecycle events at %s: %w", ErrUnavailable, cfg.URI, err)
	}
	l.log.Info("hypervisor acceleration chosen", "accel", string(accel.Accel), "domain_type", accel.DomainType, "reason", accel.Reason)
	l.log.Info("connected to libvirt", "uri", cfg.URI, "prefix", cfg.Prefix)
	return l, nil
}

// Accel returns the acceleration decision made at Connect.
func (l *Libvirt) Accel() AccelDecision { return l.accel }

// Prefix returns the configured domain name prefix.
func (l *Libvirt) Prefix() string { return l.cfg.Prefix }

// URI returns the libvirt URI connected to.
func (l *Libvirt) URI() string { return l.cfg.URI }

// Versions are the versions of the libvirt daemon and of the hypervisor behind it.
type Versions struct {
	Libvirt        string // the daemon's, e.g. "9.0.0"
	Hypervisor     string // e.g. "7.2.22"
	HypervisorType string // e.g. "QEMU", "TEST"
}

// Versions asks libvirt for its own and the hypervisor's versions.
func (l *Libvirt) Versions(ctx context.Context) (Versions, error) {
	if err := ctx.Err(); err != nil {
		return Versions{}, err
	}
	lib, err := l.c().GetLibVersion()
	if err != nil {
		return Versions{}, fmt.Errorf("getting libvirt version: %w", classify(err))
	}
	hv, err := l.c().GetVersion()
	if err != nil {
		return Versions{}, fmt.Errorf("getting hypervisor version: %w", classify(err))
	}
	typ, err := l.c().GetType()
	if err != nil {
		return Versions{}, fmt.Errorf("getting hypervisor type: %w", classify(err))
	}
	return Versions{Libvirt: versionString(lib), Hypervisor: versionString(hv), HypervisorType: typ}, nil
}

func versionString(v uint32) string {
	return fmt.Sprintf("%d.%d.%d", v/1000000, (v/1000)%1000, v%1000)
}

// Close stops event delivery (closing every subscriber's channel) and closes the
// connection. Domains keep running.
func (l *Libvirt) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	for s := range l.subs {
		delete(l.subs, s)
		close(s.ch)
	}
	l.mu.Unlock()
	l.connMu.RLock()
	conn, id := l.conn, l.callbackID
	l.connMu.RUnlock()
	if err := conn.DomainEventDeregister(id); err != nil {
		l.log.Warn("deregistering libvirt lifecycle callback", "err", err)
	}
	if _, err := conn.Close(); err != nil {
		return fmt.Errorf("closing libvirt connection: %w", err)
	}
	return nil
}

var _ io.Closer = (*Libvirt)(nil)

func (l *Libvirt) checkName(name string) error { return CheckName(l.cfg.Prefix, name) }

// Create validates spec (before libvirt is called) and starts it as a transient domain.
func (l *Libvirt) Create(ctx context.Context, spec DomainSpec) (Domain, error) {
	return l.createWith(ctx, spec, nil)
}

// createWith is Create with edit (when not nil) applied to the domain document.
func (l *Libvirt) createWith(ctx context.Context, spec DomainSpec, edit func(*libvirtxml.Domain) error) (Domain, error) {
	if err := spec.Validate(l.cfg.Prefix); err != nil {
		return Domain{}, err
	}
	doc, err := spec.domainXMLWith(l.domainType, edit)
	if err != nil {
		return Domain{}, err
	}
	if err := ctx.Err(); err != nil {
		return Domain{}, err
	}
	dom, err := l.c().DomainCreateXML(doc, libvirt.DOMAIN_NONE)
	if err != nil {
		if isLibvirtCode(err, libvirt.ERR_OPERATION_FAILED) && strings.Contains(err.Error(), "already exists") {
			// libvirt reports a duplicate name as a generic failure; the name is what matters.
			if _, lerr := l.Lookup(ctx, spec.Name); lerr == nil {
				return Domain{}, fmt.Errorf("creating domain %s: %w: %w", spec.Name, ErrConflict, err)
			}
		}
		return Domain{}, fmt.Errorf("creating domain %s: %w", spec.Name, classify(err))
	}
	defer dom.Free()
	l.log.Info("domain created", "domain", spec.Name, "type", l.domainType, "vcpus", spec.VCPUs, "memory_mib", spec.MemoryMiB)
	return l.describe(dom, spec.Name)
}

func (l *Libvirt) lookup(name string) (*libvirt.Domain, error) {
	dom, err := l.c().LookupDomainByName(name)
	if err != nil {
		return nil, classify(err)
	}
	return dom, nil
}

// Lookup returns the domain named name.
func (l *Libvirt) Lookup(ctx context.Context, name string) (Domain, error) {
	if err := l.checkName(name); err != nil {
		return Domain{}, err
	}
	if err := ctx.Err(); err != nil {
		return Domain{}, err
	}
	dom, err := l.lookup(name)
	if err != nil {
		return Domain{}, fmt.Errorf("looking up domain %s: %w", name, err)
	}
	defer dom.Free()
	return l.describe(dom, name)
}

func (l *Libvirt) describe(dom *libvirt.Domain, name string) (Domain, error) {
	d := Domain{Name: name}
	var err error
	if d.UUID, err = dom.GetUUIDString(); err != nil {
		return Domain{}, fmt.Errorf("reading UUID of domain %s: %w", name, classify(err))
	}
	st, _, err := dom.GetState()
	if err != nil {
		return Domain{}, fmt.Errorf("reading state of domain %s: %w", name, classify(err))
	}
	d.State = stateOf(st)
	md, err := dom.GetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, MetadataNamespace, libvirt.DOMAIN_AFFECT_CURRENT)
	switch {
	case err == nil:
		if d.Labels, err = parseLabels(md); err != nil {
			l.log.Warn("unreadable labels in domain metadata", "domain", name, "err", err)
		}
	case isLibvirtCode(err, libvirt.ERR_NO_DOMAIN_METADATA):
	default:
		return Domain{}, fmt.Errorf("reading metadata of domain %s: %w", name, classify(err))
	}
	return d, nil
}

// List returns the domains (running or defined) whose names carry the prefix.
func (l *Libvirt) List(ctx context.Context) ([]Domain, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	doms, err := l.c().ListAllDomains(0)
	if err != nil {
		return nil, fmt.Errorf("listing domains: %w", classify(err))
	}
	defer func() {
		for i := range doms {
			doms[i].Free()
		}
	}()
	var out []Domain
	for i := range doms {
		name, err := doms[i].GetName()
		if err != nil || !strings.HasPrefix(name, l.cfg.Prefix) {
			continue
		}
		d, err := l.describe(&doms[i], name)
		if errors.Is(err, ErrNotFound) {
			continue // went away while listing
		}
		if err != nil {
			return nil, fmt.Errorf("listing domains: %w", err)
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Destroy stops the domain at once. A transient domain disappears.
func (l *Libvirt) Destroy(ctx context.Context, name string) error {
	if err := l.checkName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dom, err := l.lookup(name)
	if err != nil {
		return fmt.Errorf("destroying domain %s: %w", name, err)
	}
	defer dom.Free()
	if err := dom.Destroy(); err != nil {
		if isLibvirtCode(err, libvirt.ERR_OPERATION_INVALID) {
			return nil // already shut off (a persistent domain defined elsewhere)
		}
		return fmt.Errorf("destroying domain %s: %w", name, classify(err))
	}
	l.log.Info("domain destroyed", "domain", name)
	return nil
}

// ShutdownPoll is how often Shutdown checks whether the domain has gone.
const ShutdownPoll = 100 * time.Millisecond

// Shutdown presses the ACPI power button, waits up to timeout for the domain to stop,
// then destroys it. It returns nil once the domain is no longer running.
func (l *Libvirt) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	if err := l.checkName(name); err != nil {
		return err
	}
	if timeout < 0 {
		return fieldErr("timeout", "use 0 (destroy at once) or a positive duration", "%v is negative", timeout)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dom, err := l.lookup(name)
	if err != nil {
		return fmt.Errorf("shutting down domain %s: %w", name, err)
	}
	defer dom.Free()
	err = dom.ShutdownFlags(libvirt.DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
	if isLibvirtCode(err, libvirt.ERR_INVALID_ARG, libvirt.ERR_NO_SUPPORT, libvirt.ERR_ARGUMENT_UNSUPPORTED) {
		err = dom.Shutdown() // drivers without the ACPI flag (libvirt's test driver)
	}
	switch {
	case err == nil:
	case isLibvirtCode(err, libvirt.ERR_NO_DOMAIN):
		return nil // stopped meanwhile
	case isLibvirtCode(err, libvirt.ERR_OPERATION_INVALID):
		if active, aerr := dom.IsActive(); aerr != nil || !active {
			return nil // not running
		}
		l.log.Warn("guest refused shutdown request; will destroy after timeout", "domain", name, "err", err)
	default:
		return fmt.Errorf("shutting down domain %s: %w", name, classify(err))
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(ShutdownPoll)
	defer tick.Stop()
	for {
		active, err := dom.IsActive()
		if err != nil || !active {
			if err != nil && !isLibvirtCode(err, libvirt.ERR_NO_DOMAIN) {
				return fmt.Errorf("waiting for domain %s to shut down: %w", name, classify(err))
			}
			l.log.Info("domain shut down", "domain", name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for domain %s to shut down: %w", name, ctx.Err())
		case <-deadline.C:
			l.log.Warn("domain did not shut down in time; destroying it", "domain", name, "timeout", timeout)
			if err := dom.Destroy(); err != nil && !isLibvirtCode(err, libvirt.ERR_NO_DOMAIN, libvirt.ERR_OPERATION_INVALID) {
				return fmt.Errorf("destroying domain %s after shutdown timeout %v: %w", name, timeout, classify(err))
			}
			return nil
		case <-tick.C:
		}
	}
}

func stateOf(s libvirt.DomainState) State {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return StateRunning
	case libvirt.DOMAIN_BLOCKED:
		return StateBlocked
	case libvirt.DOMAIN_PAUSED:
		return StatePaused
	case libvirt.DOMAIN_SHUTDOWN:
		return StateShuttingOff
	case libvirt.DOMAIN_SHUTOFF:
		return StateShutoff
	case libvirt.DOMAIN_CRASHED:
		return StateCrashed
	case libvirt.DOMAIN_PMSUSPENDED:
		return StateSuspended
	}
	return StateUnknown
}
