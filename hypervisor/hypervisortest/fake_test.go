package hypervisortest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
)

// fakeSpec returns a valid spec whose kernel and initrd are empty files.
func fakeSpec(t *testing.T, name string) hypervisor.DomainSpec {
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256,
		Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"), Cmdline: "console=ttyS0"}
}

func TestFakeContract(t *testing.T) {
	RunContract(t, func(t *testing.T) Harness {
		f := New("")
		f.SetIgnoreShutdown(true) // like the busybox test guest, which ignores ACPI
		return Harness{HV: f, Spec: fakeSpec, Kill: func(t *testing.T, name string) {
			if err := f.Kill(name); err != nil {
				t.Fatalf("Kill(%s): %v", name, err)
			}
		}}
	})
}

func TestFakeHooks(t *testing.T) {
	ctx := context.Background()
	f := New("pd-")
	events, _ := f.Events(ctx)
	spec := fakeSpec(t, "pd-one")
	if _, err := f.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.Crash("pd-one"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		select {
		case e := <-events:
			got = append(got, string(e.Type)+"/"+e.Detail)
		case <-time.After(time.Second):
			t.Fatalf("events so far %v, want started, crashed, stopped", got)
		}
	}
	want := []string{"started/booted", "crashed/panicked", "stopped/crashed"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events = %v, want %v", got, want)
		}
	}
	boom := errors.New("boom")
	f.FailCreate(boom)
	if _, err := f.Create(ctx, spec); !errors.Is(err, boom) {
		t.Fatalf("Create with FailCreate: err = %v", err)
	}
	f.FailCreate(nil)
	f.SetIgnoreShutdown(false)
	if _, err := f.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.Shutdown(ctx, "pd-one", time.Hour); err != nil {
		t.Fatalf("graceful Shutdown: %v", err)
	}
	if f.Created() != 2 {
		t.Fatalf("Created = %d, want 2", f.Created())
	}
}
