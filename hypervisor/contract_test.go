package hypervisor_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/hypervisor/hypervisortest"
	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
	"libvirt.org/go/libvirt"
)

// testLogger writes to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

var _ io.Writer = tlogWriter{}

func connect(t testing.TB, cfg hypervisor.Config) *hypervisor.Libvirt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := hypervisor.Connect(ctx, cfg, hypervisor.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatalf("Connect(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dummyFiles returns an empty kernel and initrd: enough for libvirt's test driver, which
// boots nothing.
func dummyFiles(t *testing.T) (kernel, initrd string) {
	dir := t.TempDir()
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return kernel, initrd
}

// TestContractTestDriver runs the contract against libvirt's in-process test driver
// (no daemon, no guests). Each subtest gets its own fresh test:///default instance.
func TestContractTestDriver(t *testing.T) {
	hypervisortest.RunContract(t, func(t *testing.T) hypervisortest.Harness {
		cfg := hypervisor.DefaultConfig()
		cfg.URI = "test:///default"
		l := connect(t, cfg)
		return hypervisortest.Harness{
			HV:             l,
			StateOnlyStats: true,
			Spec: func(t *testing.T, name string) hypervisor.DomainSpec {
				k, i := dummyFiles(t)
				return hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256, Kernel: k, Initrd: i}
			},
			// test:///default is shared by every connection in this process: a second
			// connection destroys the domain behind the Hypervisor's back.
			Kill: func(t *testing.T, name string) {
				c, err := libvirt.NewConnect("test:///default")
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				d, err := c.LookupDomainByName(name)
				if err != nil {
					t.Fatalf("killing %s: %v", name, err)
				}
				defer d.Free()
				if err := d.Destroy(); err != nil {
					t.Fatalf("killing %s: %v", name, err)
				}
			},
		}
	})
}

// TestContractQEMU runs the contract against qemu:///system with real guests: the host
// kernel and a busybox initramfs that sleeps (and ignores the ACPI power button).
func TestContractQEMU(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	guest := testguest.Build(t, testguest.Options{Script: "sleep 3600"})
	hypervisortest.RunContract(t, func(t *testing.T) hypervisortest.Harness {
		cfg := hypervisor.DefaultConfig()
		cfg.URI = uri
		l := connect(t, cfg)
		return hypervisortest.Harness{
			HV: l,
			Spec: func(t *testing.T, name string) hypervisor.DomainSpec {
				return hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256,
					Kernel: guest.Kernel, Initrd: guest.Initrd, Cmdline: "console=ttyS0 quiet panic=-1",
					ConsoleLog: filepath.Join(guest.Dir, name+".console.log")}
			},
			Kill: func(t *testing.T, name string) { virshDestroy(t, uri, name) },
		}
	})
}

func virshDestroy(t *testing.T, uri, name string) {
	t.Helper()
	if out, err := exec.Command("virsh", "-c", uri, "destroy", name).CombinedOutput(); err != nil {
		t.Fatalf("virsh destroy %s: %v: %s", name, err, out)
	}
}
