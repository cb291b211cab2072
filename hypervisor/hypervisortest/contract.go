package hypervisortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
)

// Harness is one implementation under the contract.
type Harness struct {
	// HV is the implementation; its Prefix names every domain the suite creates.
	HV hypervisor.Hypervisor
	// Spec returns a valid spec named name for this implementation (real kernel and
	// initrd for a real hypervisor). The suite may change VCPUs, MemoryMiB and Labels.
	Spec func(t *testing.T, name string) hypervisor.DomainSpec
	// Kill stops the domain from outside HV (virsh destroy for libvirt, Fake.Kill).
	Kill func(t *testing.T, name string)
	// StateOnlyStats says the implementation's Stats report only the state (libvirt's
	// test driver simulates no CPU, memory or vCPU figures); the suite then checks no more.
	StateOnlyStats bool
	// EventWithin bounds how long an event may take to arrive (default 2s).
	EventWithin time.Duration
}

// RunContract runs the behaviour every hypervisor.Hypervisor must have. newHarness is
// called once per subtest. Every domain a subtest creates is destroyed in t.Cleanup.
func RunContract(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("CreateLookupListDestroy", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		events := subscribe(t, ctx, h)
		spec := h.Spec(t, uniqueName(t, h))
		spec.Labels = map[string]string{"pool": "contract", "paddock.dev/role": "test"}
		d := create(t, ctx, h, spec)
		if d.Name != spec.Name || d.UUID == "" || d.State != hypervisor.StateRunning {
			t.Fatalf("Create returned %+v, want name %s, a UUID, state running", d, spec.Name)
		}
		waitEvent(t, h, events, spec.Name, hypervisor.EventStarted)
		got, err := h.HV.Lookup(ctx, spec.Name)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", spec.Name, err)
		}
		if got.UUID != d.UUID || got.State != hypervisor.StateRunning || got.Labels["pool"] != "contract" || got.Labels["paddock.dev/role"] != "test" {
			t.Fatalf("Lookup = %+v, want UUID %s, running, labels %v", got, d.UUID, spec.Labels)
		}
		list, err := h.HV.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if !containsName(list, spec.Name) {
			t.Fatalf("List = %v, want it to contain %s", names(list), spec.Name)
		}
		for _, l := range list {
			if !strings.HasPrefix(l.Name, h.HV.Prefix()) {
				t.Errorf("List returned %s, which lacks the prefix %q", l.Name, h.HV.Prefix())
			}
		}
		if err := h.HV.Destroy(ctx, spec.Name); err != nil {
			t.Fatalf("Destroy(%s): %v", spec.Name, err)
		}
		e := waitEvent(t, h, events, spec.Name, hypervisor.EventStopped)
		if e.Detail != "destroyed" {
			t.Errorf("stopped event detail = %q, want destroyed", e.Detail)
		}
		if _, err := h.HV.Lookup(ctx, spec.Name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Fatalf("Lookup after Destroy: err = %v, want ErrNotFound", err)
		}
		list, err = h.HV.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if containsName(list, spec.Name) {
			t.Fatalf("List after Destroy still has %s", spec.Name)
		}
	})

	t.Run("RefusesNamesWithoutPrefix", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		foreign := "other-" + strings.TrimPrefix(uniqueName(t, h), h.HV.Prefix())
		spec := h.Spec(t, foreign)
		checks := map[string]error{}
		_, checks["Create"] = h.HV.Create(ctx, spec)
		_, checks["Lookup"] = h.HV.Lookup(ctx, foreign)
		checks["Destroy"] = h.HV.Destroy(ctx, foreign)
		checks["Shutdown"] = h.HV.Shutdown(ctx, foreign, time.Second)
		_, checks["Stats"] = h.HV.Stats(ctx, foreign)
		_, checks["Lookup(prefix only)"] = h.HV.Lookup(ctx, h.HV.Prefix())
		for op, err := range checks {
			var fe *hypervisor.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, hypervisor.ErrInvalid) || fe.Field != "name" || !strings.Contains(err.Error(), h.HV.Prefix()) {
				t.Errorf("%s: err = %v, want a *FieldError for name mentioning the prefix %q", op, err, h.HV.Prefix())
			}
		}
	})

	t.Run("RefusesBadSpecs", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		cases := []struct {
			name  string
			edit  func(*hypervisor.DomainSpec)
			field string
		}{
			{"zero memory", func(s *hypervisor.DomainSpec) { s.MemoryMiB = 0 }, "memory"},
			{"zero vcpus", func(s *hypervisor.DomainSpec) { s.VCPUs = 0 }, "vcpus"},
			{"missing kernel", func(s *hypervisor.DomainSpec) { s.Kernel = "/nonexistent/vmlinuz" }, "kernel"},
			{"duplicate disk target", func(s *hypervisor.DomainSpec) {
				s.Disks = []hypervisor.Disk{{Path: s.Initrd, Format: "raw", Target: "vdb", ReadOnly: true}, {Path: s.Initrd, Format: "raw", Target: "vdb", ReadOnly: true}}
			}, "disks[1].target"},
			{"missing share", func(s *hypervisor.DomainSpec) {
				s.Filesystems = []hypervisor.Filesystem{{Source: "/nonexistent/paddock-share", Tag: "paddock.in"}}
			}, "filesystems[0].source"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				spec := h.Spec(t, uniqueName(t, h))
				c.edit(&spec)
				_, err := h.HV.Create(ctx, spec)
				var fe *hypervisor.FieldError
				if !errors.As(err, &fe) || fe.Field != c.field {
					t.Fatalf("Create: err = %v, want a *FieldError for %s", err, c.field)
				}
				if _, err := h.HV.Lookup(ctx, spec.Name); !errors.Is(err, hypervisor.ErrNotFound) {
					t.Fatalf("a refused spec left a domain behind: Lookup err = %v", err)
				}
			})
		}
	})

	t.Run("DuplicateNameConflicts", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		spec := h.Spec(t, uniqueName(t, h))
		create(t, ctx, h, spec)
		if _, err := h.HV.Create(ctx, spec); !errors.Is(err, hypervisor.ErrConflict) {
			t.Fatalf("second Create(%s): err = %v, want ErrConflict", spec.Name, err)
		}
	})

	t.Run("MissingIsNotFound", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		name := uniqueName(t, h)
		if _, err := h.HV.Lookup(ctx, name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("Lookup: err = %v, want ErrNotFound", err)
		}
		if err := h.HV.Destroy(ctx, name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("Destroy: err = %v, want ErrNotFound", err)
		}
		if err := h.HV.Shutdown(ctx, name, time.Second); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("Shutdown: err = %v, want ErrNotFound", err)
		}
		if _, err := h.HV.Stats(ctx, name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("Stats: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ShutdownStopsDomain", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		events := subscribe(t, ctx, h)
		spec := h.Spec(t, uniqueName(t, h))
		create(t, ctx, h, spec)
		waitEvent(t, h, events, spec.Name, hypervisor.EventStarted)
		// A guest that ignores the power button is destroyed after the timeout.
		if err := h.HV.Shutdown(ctx, spec.Name, time.Second); err != nil {
			t.Fatalf("Shutdown(%s): %v", spec.Name, err)
		}
		waitEvent(t, h, events, spec.Name, hypervisor.EventStopped)
		if _, err := h.HV.Lookup(ctx, spec.Name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Fatalf("Lookup after Shutdown: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("KilledFromOutsideEmitsStopped", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		events := subscribe(t, ctx, h)
		spec := h.Spec(t, uniqueName(t, h))
		create(t, ctx, h, spec)
		waitEvent(t, h, events, spec.Name, hypervisor.EventStarted)
		h.Kill(t, spec.Name)
		waitEvent(t, h, events, spec.Name, hypervisor.EventStopped)
		if _, err := h.HV.Lookup(ctx, spec.Name); !errors.Is(err, hypervisor.ErrNotFound) {
			t.Fatalf("Lookup after kill: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		h, ctx := setup(t, newHarness)
		spec := h.Spec(t, uniqueName(t, h))
		spec.VCPUs = 1
		create(t, ctx, h, spec)
		st, err := h.HV.Stats(ctx, spec.Name)
		if err != nil {
			t.Fatalf("Stats(%s): %v", spec.Name, err)
		}
		if len(st) != 1 || st[0].Name != spec.Name || st[0].State != hypervisor.StateRunning {
			t.Fatalf("Stats = %+v, want one running entry for %s", st, spec.Name)
		}
		if !h.StateOnlyStats {
			if st[0].VCPUs.Current != 1 || len(st[0].VCPUs.Time) != 1 {
				t.Errorf("VCPUs = %+v, want 1 current with one time", st[0].VCPUs)
			}
			if st[0].Balloon.CurrentKiB != uint64(spec.MemoryMiB)*1024 {
				t.Errorf("Balloon.CurrentKiB = %d, want %d", st[0].Balloon.CurrentKiB, spec.MemoryMiB*1024)
			}
		}
		all, err := h.HV.Stats(ctx)
		if err != nil {
			t.Fatalf("Stats(): %v", err)
		}
		found := false
		for _, s := range all {
			found = found || s.Name == spec.Name
			if !strings.HasPrefix(s.Name, h.HV.Prefix()) {
				t.Errorf("Stats() returned %s, which lacks the prefix", s.Name)
			}
		}
		if !found {
			t.Errorf("Stats() has no entry for %s", spec.Name)
		}
		cpu, err := h.HV.CPUTimes(ctx)
		if err != nil {
			t.Fatalf("CPUTimes: %v", err)
		}
		for n := range cpu {
			if !strings.HasPrefix(n, h.HV.Prefix()) {
				t.Errorf("CPUTimes returned %s, which lacks the prefix", n)
			}
		}
		if !h.StateOnlyStats {
			// At least Stats' earlier figure, but for a tick of /proc's 10 ms resolution
			// (on qemu:///system CPUTimes reads /proc, Stats libvirt).
			if c, ok := cpu[spec.Name]; !ok || c <= 0 || c < st[0].CPUTime-10*time.Millisecond {
				t.Errorf("CPUTimes[%s] = %v (present %v), want the domain's CPU time, at least Stats' %v", spec.Name, c, ok, st[0].CPUTime)
			}
		}
	})

	t.Run("EventsEndWithContext", func(t *testing.T) {
		h, _ := setup(t, newHarness)
		ctx, cancel := context.WithCancel(context.Background())
		ch, err := h.HV.Events(ctx)
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		cancel()
		timeout := time.After(h.EventWithin)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-timeout:
				t.Fatalf("event channel still open %v after its context ended", h.EventWithin)
			}
		}
	})
}

func setup(t *testing.T, newHarness func(t *testing.T) Harness) (Harness, context.Context) {
	t.Helper()
	h := newHarness(t)
	if h.EventWithin == 0 {
		h.EventWithin = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return h, ctx
}

func subscribe(t *testing.T, ctx context.Context, h Harness) <-chan hypervisor.Event {
	t.Helper()
	ch, err := h.HV.Events(ctx)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	return ch
}

// create creates spec and destroys it in t.Cleanup (ignoring ErrNotFound).
func create(t *testing.T, ctx context.Context, h Harness, spec hypervisor.DomainSpec) hypervisor.Domain {
	t.Helper()
	d, err := h.HV.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create(%s): %v", spec.Name, err)
	}
	t.Cleanup(func() {
		if err := h.HV.Destroy(context.Background(), spec.Name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("cleanup: destroying %s: %v", spec.Name, err)
		}
	})
	return d
}

// waitEvent waits up to h.EventWithin for an event of typ about name, skipping others.
func waitEvent(t *testing.T, h Harness, ch <-chan hypervisor.Event, name string, typ hypervisor.EventType) hypervisor.Event {
	t.Helper()
	timeout := time.After(h.EventWithin)
	var seen []string
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("event channel closed while waiting for %s %s (saw %v)", name, typ, seen)
			}
			if !strings.HasPrefix(e.Domain, h.HV.Prefix()) {
				t.Errorf("event for %s, which lacks the prefix %q", e.Domain, h.HV.Prefix())
			}
			if e.Domain == name && e.Type == typ {
				return e
			}
			seen = append(seen, e.Domain+":"+string(e.Type)+"/"+e.Detail)
		case <-timeout:
			t.Fatalf("no %s event for %s within %v (saw %v)", typ, name, h.EventWithin, seen)
		}
	}
}

// uniqueName returns prefix + "ct-" + 8 random hex digits.
func uniqueName(t *testing.T, h Harness) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return h.HV.Prefix() + "ct-" + hex.EncodeToString(b[:])
}

func containsName(ds []hypervisor.Domain, name string) bool {
	return slices.ContainsFunc(ds, func(d hypervisor.Domain) bool { return d.Name == name })
}

func names(ds []hypervisor.Domain) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}
