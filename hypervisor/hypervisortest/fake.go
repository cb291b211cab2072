package hypervisortest

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
)

// Fake is an in-memory hypervisor.Hypervisor for unit tests of callers. It validates
// specs and refuses names without its prefix exactly as the real implementation does,
// keeps domains in a map, and emits the lifecycle events libvirt would. Test hooks
// (Kill, Crash, PowerOff, SetIgnoreShutdown, FailCreate) simulate what happens outside.
type Fake struct {
	prefix string

	// mu guards the fields below.
	mu             sync.Mutex
	doms           map[string]*fakeDomain
	subs           map[chan hypervisor.Event]struct{}
	ignoreShutdown bool
	failCreate     error
	created        int
	statsHeld      chan struct{} // while not nil, Stats waits for it to close (HoldStats)
}

type fakeDomain struct {
	spec    hypervisor.DomainSpec
	uuid    string
	started time.Time
}

var _ hypervisor.Hypervisor = (*Fake)(nil)

// New returns an empty Fake managing domains named prefix+… ("" means the default
// prefix).
func New(prefix string) *Fake {
	if prefix == "" {
		prefix = hypervisor.DefaultPrefix
	}
	return &Fake{prefix: prefix, doms: map[string]*fakeDomain{}, subs: map[chan hypervisor.Event]struct{}{}}
}

// Prefix returns the name prefix.
func (f *Fake) Prefix() string { return f.prefix }

func (f *Fake) checkName(name string) error { return hypervisor.CheckName(f.prefix, name) }

// emit delivers e to every subscriber without blocking; f.mu must be held.
func (f *Fake) emit(name string, typ hypervisor.EventType, detail string) {
	e := hypervisor.Event{Domain: name, Type: typ, Detail: detail, Time: time.Now()}
	for ch := range f.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// FailCreate makes every later Create fail with err (nil restores normal behaviour).
func (f *Fake) FailCreate(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCreate = err
}

// SetIgnoreShutdown makes guests ignore the ACPI power button, so Shutdown waits for its
// timeout and then destroys the domain.
func (f *Fake) SetIgnoreShutdown(ignore bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ignoreShutdown = ignore
}

// Created counts successful Create calls.
func (f *Fake) Created() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created
}

// Create starts a simulated domain.
func (f *Fake) Create(ctx context.Context, spec hypervisor.DomainSpec) (hypervisor.Domain, error) {
	if err := spec.Validate(f.prefix); err != nil {
		return hypervisor.Domain{}, err
	}
	if err := ctx.Err(); err != nil {
		return hypervisor.Domain{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCreate != nil {
		return hypervisor.Domain{}, fmt.Errorf("creating domain %s: %w", spec.Name, f.failCreate)
	}
	if _, ok := f.doms[spec.Name]; ok {
		return hypervisor.Domain{}, fmt.Errorf("creating domain %s: %w", spec.Name, hypervisor.ErrConflict)
	}
	f.created++
	d := &fakeDomain{spec: spec, uuid: fmt.Sprintf("00000000-0000-4000-8000-%012d", f.created), started: time.Now()}
	f.doms[spec.Name] = d
	f.emit(spec.Name, hypervisor.EventStarted, "booted")
	return d.domain(spec.Name), nil
}

func (d *fakeDomain) domain(name string) hypervisor.Domain {
	return hypervisor.Domain{Name: name, UUID: d.uuid, State: hypervisor.StateRunning, Labels: maps.Clone(d.spec.Labels)}
}

// stop removes the domain and emits its events; f.mu must be held.
func (f *Fake) stop(name string, events ...[2]string) error {
	if _, ok := f.doms[name]; !ok {
		return hypervisor.ErrNotFound
	}
	delete(f.doms, name)
	for _, e := range events {
		f.emit(name, hypervisor.EventType(e[0]), e[1])
	}
	return nil
}

// Destroy removes the domain at once.
func (f *Fake) Destroy(ctx context.Context, name string) error {
	if err := f.checkName(name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.stop(name, [2]string{string(hypervisor.EventStopped), "destroyed"}); err != nil {
		return fmt.Errorf("destroying domain %s: %w", name, err)
	}
	return nil
}

// Shutdown stops the domain gracefully, or after timeout when SetIgnoreShutdown(true).
func (f *Fake) Shutdown(ctx context.Context, name string, timeout time.Duration) error {
	if err := f.checkName(name); err != nil {
		return err
	}
	f.mu.Lock()
	_, ok := f.doms[name]
	ignore := f.ignoreShutdown
	if ok && !ignore {
		f.stop(name, [2]string{string(hypervisor.EventShutdown), "guest"}, [2]string{string(hypervisor.EventShutdown), "finished"}, [2]string{string(hypervisor.EventStopped), "shutdown"})
	}
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("shutting down domain %s: %w", name, hypervisor.ErrNotFound)
	}
	if !ignore {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for domain %s to shut down: %w", name, ctx.Err())
	case <-t.C:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stop(name, [2]string{string(hypervisor.EventStopped), "destroyed"})
	return nil
}

// Kill simulates a domain killed from outside (virsh destroy, QEMU killed).
func (f *Fake) Kill(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stop(name, [2]string{string(hypervisor.EventStopped), "destroyed"})
}

// Crash simulates a guest crash (with on_crash=destroy, as real domains have).
func (f *Fake) Crash(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stop(name, [2]string{string(hypervisor.EventCrashed), "panicked"}, [2]string{string(hypervisor.EventStopped), "crashed"})
}

// PowerOff simulates the guest powering itself off.
func (f *Fake) PowerOff(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stop(name, [2]string{string(hypervisor.EventShutdown), "guest"}, [2]string{string(hypervisor.EventStopped), "shutdown"})
}

// Lookup returns the domain.
func (f *Fake) Lookup(ctx context.Context, name string) (hypervisor.Domain, error) {
	if err := f.checkName(name); err != nil {
		return hypervisor.Domain{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.doms[name]
	if !ok {
		return hypervisor.Domain{}, fmt.Errorf("looking up domain %s: %w", name, hypervisor.ErrNotFound)
	}
	return d.domain(name), nil
}

// List returns all domains sorted by name.
func (f *Fake) List(ctx context.Context) ([]hypervisor.Domain, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []hypervisor.Domain
	for name, d := range f.doms {
		out = append(out, d.domain(name))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Events subscribes to lifecycle events until ctx ends.
func (f *Fake) Events(ctx context.Context) (<-chan hypervisor.Event, error) {
	ch := make(chan hypervisor.Event, hypervisor.EventBuffer)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.subs, ch)
		close(ch)
	}()
	return ch, nil
}

// HoldStats makes Stats wait, as libvirt's does when the guests' QEMU processes are
// starved of CPU, until release is called (or its ctx ends). CPUTimes still answers.
func (f *Fake) HoldStats() (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.statsHeld = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.statsHeld = nil
			f.mu.Unlock()
			close(ch)
		})
	}
}

// CPUTimes returns the CPU time Stats would report for each domain.
func (f *Fake) CPUTimes(ctx context.Context) (map[string]time.Duration, error) {
	st, err := f.stats(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]time.Duration, len(st))
	for _, s := range st {
		out[s.Name] = s.CPUTime
	}
	return out, nil
}

// Stats returns synthetic statistics: CPU time grows with wall time since creation.
func (f *Fake) Stats(ctx context.Context, names ...string) ([]hypervisor.DomainStats, error) {
	f.mu.Lock()
	held := f.statsHeld
	f.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.stats(ctx, names...)
}

func (f *Fake) stats(ctx context.Context, names ...string) ([]hypervisor.DomainStats, error) {
	for _, n := range names {
		if err := f.checkName(n); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(names) == 0 {
		for n := range f.doms {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	var out []hypervisor.DomainStats
	for _, n := range names {
		d, ok := f.doms[n]
		if !ok {
			return nil, fmt.Errorf("stats of domain %s: %w", n, hypervisor.ErrNotFound)
		}
		up := time.Since(d.started)
		s := hypervisor.DomainStats{
			Name: n, State: hypervisor.StateRunning, CPUTime: up / 2,
			Balloon: hypervisor.BalloonStats{CurrentKiB: uint64(d.spec.MemoryMiB) * 1024, MaximumKiB: uint64(d.spec.MemoryMiB) * 1024},
			VCPUs:   hypervisor.VCPUStats{Current: d.spec.VCPUs, Maximum: d.spec.VCPUs},
		}
		for range d.spec.VCPUs {
			s.VCPUs.Time = append(s.VCPUs.Time, up/time.Duration(2*d.spec.VCPUs))
		}
		for _, disk := range d.spec.Disks {
			s.Blocks = append(s.Blocks, hypervisor.BlockStats{Name: disk.Target, Path: disk.Path})
		}
		out = append(out, s)
	}
	return out, nil
}

// Spec returns the spec domain name was created with, while it exists.
func (f *Fake) Spec(name string) (hypervisor.DomainSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.doms[name]
	if !ok {
		return hypervisor.DomainSpec{}, false
	}
	return d.spec, true
}
