package hypervisor

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

func logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func randHex(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

func mustConnect(t testing.TB, cfg Config, opts ...Opt) *Libvirt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Connect(ctx, cfg, append([]Opt{WithLogger(logger(t))}, opts...)...)
	if err != nil {
		t.Fatalf("Connect(%s): %v", cfg.URI, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// createGuest creates spec, checking its XML with virt-xml-validate first, and destroys
// it in t.Cleanup.
func createGuest(t *testing.T, ctx context.Context, l *Libvirt, spec DomainSpec) {
	t.Helper()
	doc, err := spec.domainXML(l.domainType)
	if err != nil {
		t.Fatal(err)
	}
	validateXML(t, doc)
	if _, err := l.Create(ctx, spec); err != nil {
		t.Fatalf("Create(%s): %v", spec.Name, err)
	}
	t.Cleanup(func() {
		if err := l.Destroy(context.Background(), spec.Name); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup: destroying %s: %v", spec.Name, err)
		}
	})
}

// readLine connects to the channel's unix socket as a client (libvirt created and
// listens on it) and returns the first line the guest writes, waiting up to timeout.
func readLine(t *testing.T, socket string, timeout time.Duration) string {
	t.Helper()
	line, err := readLineErr(socket, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return line
}

func readLineErr(socket string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for time.Now().Before(deadline) {
		if conn, err = net.Dial("unix", socket); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if conn == nil {
		return "", fmt.Errorf("connecting to %s: %w", socket, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(deadline)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading a line from the guest on %s (got %q): %w", socket, line, err)
	}
	return strings.TrimSpace(line), nil
}

// bootSpec is a 1-vCPU, 256 MiB guest with the agent channel and a console log.
func bootSpec(t testing.TB, g testguest.Guest, name string) DomainSpec {
	return DomainSpec{
		Name: name, VCPUs: 1, MemoryMiB: 256,
		Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: "console=ttyS0 quiet panic=-1",
		Channels:   []Channel{{Name: testguest.PortName, SocketPath: filepath.Join(g.Dir, "agent.sock")}},
		ConsoleLog: filepath.Join(g.Dir, "console.log"),
		Labels:     map[string]string{"test": t.Name()},
	}
}

// TestBootReadsVirtioSerial boots a real guest under libvirt, reads the line it writes on
// its virtio-serial port (naming the hardware RNG its kernel uses: the domain's virtio RNG), checks the console log, QMP query-status and the stats of a
// running guest, then destroys it.
func TestBootReadsVirtioSerial(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	g := testguest.Build(t, testguest.Options{Modules: []string{"virtio_blk", "virtio_balloon"}, Script: `echo console-marker-$(uname -r)
for i in $(seq 1 100); do [ -b /dev/vda ] && break; sleep 0.05; done
dd if=/dev/vda of=/dev/null bs=64k 2>/dev/null
echo "hello-from-guest rng=$(cat /sys/devices/virtual/misc/hw_random/rng_current 2>/dev/null)" > "$PORT"
sleep 3600`})
	cfg := DefaultConfig()
	cfg.URI = uri
	l := mustConnect(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	v, err := l.Versions(ctx)
	if err != nil || v.Libvirt == "" || v.Hypervisor == "" || v.HypervisorType != "QEMU" {
		t.Fatalf("Versions = %+v, %v", v, err)
	}
	t.Logf("libvirt %s, %s %s, accel %s", v.Libvirt, v.HypervisorType, v.Hypervisor, l.Accel())

	spec := bootSpec(t, g, "paddock-hvboot-"+randHex(t))
	disk := filepath.Join(g.Dir, "data.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Disks = []Disk{{Path: disk, Format: "raw", Target: "vda", ReadOnly: true}}
	start := time.Now()
	createGuest(t, ctx, l, spec)
	line := readLine(t, spec.Channels[0].SocketPath, 120*time.Second)
	t.Logf("first line on the virtio-serial port %v after Create", time.Since(start).Round(time.Millisecond))
	// The guest's kernel uses the domain's virtio RNG (seeded from the host at boot).
	if line != "hello-from-guest rng=virtio_rng.0" {
		t.Fatalf("guest wrote %q, want hello-from-guest rng=virtio_rng.0", line)
	}

	st, err := l.QueryStatus(ctx, spec.Name)
	if err != nil {
		t.Fatalf("QueryStatus: %v", err)
	}
	if !st.Running || st.Status != "running" {
		t.Fatalf("QueryStatus = %+v, want running", st)
	}

	stats, err := l.Stats(ctx, spec.Name)
	if err != nil || len(stats) != 1 {
		t.Fatalf("Stats = %+v, %v", stats, err)
	}
	s := stats[0]
	t.Logf("stats: %+v", s)
	if s.CPUTime <= 0 || s.VCPUs.Current != 1 || len(s.VCPUs.Time) != 1 || s.VCPUs.Time[0] <= 0 {
		t.Errorf("CPU/vCPU stats of a booted guest are empty: %+v", s)
	}
	if s.Balloon.CurrentKiB != 256*1024 || s.Balloon.RSSKiB == 0 {
		t.Errorf("balloon stats = %+v, want current 262144 KiB and a resident size", s.Balloon)
	}

	if len(s.Blocks) != 1 || s.Blocks[0].Name != "vda" || s.Blocks[0].Path != disk || s.Blocks[0].RdBytes < 1<<20 || s.Blocks[0].RdReqs == 0 {
		t.Errorf("block stats = %+v, want vda with at least 1 MiB read (the guest read the whole disk)", s.Blocks)
	}

	// With the guest's virtio_balloon driver, guest-side memory figures arrive every
	// BalloonStatsPeriod seconds.
	for i := 0; s.Balloon.AvailableKiB == 0 && i < 4*(BalloonStatsPeriod+5); i++ {
		time.Sleep(250 * time.Millisecond)
		if stats, err = l.Stats(ctx, spec.Name); err != nil {
			t.Fatal(err)
		}
		s = stats[0]
	}
	if s.Balloon.AvailableKiB == 0 || s.Balloon.AvailableKiB > 256*1024 || s.Balloon.UnusedKiB == 0 {
		t.Errorf("guest balloon stats = %+v, want available (<= 256 MiB) and unused memory", s.Balloon)
	}
	t.Logf("balloon: %+v", s.Balloon)

	// The serial console goes to the log file (through virtlogd).
	var console []byte
	for i := 0; i < 50; i++ {
		if console, _ = os.ReadFile(spec.ConsoleLog); strings.Contains(string(console), "console-marker-"+g.KernelVersion) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(string(console), "console-marker-"+g.KernelVersion) {
		t.Errorf("console log %s lacks the guest's marker; it holds:\n%s", spec.ConsoleLog, console)
	}

	// go-qemu's monitor interface: QMP events through libvirt. Pausing the domain through
	// libvirt makes QEMU emit STOP.
	mon, err := l.Monitor(spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatalf("Monitor.Connect: %v", err)
	}
	defer mon.Disconnect()
	qmpEvents, err := mon.Events(ctx)
	if err != nil {
		t.Fatalf("Monitor.Events: %v", err)
	}
	if _, err := mon.Run([]byte(`{"execute":"no-such-command"}`)); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("an unknown QMP command gave err = %v, want a QMP CommandNotFound error", err)
	}
	dom, err := l.c().LookupDomainByName(spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer dom.Free()
	if err := dom.Suspend(); err != nil {
		t.Fatalf("suspending: %v", err)
	}
	// Other events may come first (VSERPORT_CHANGE when the test's end of the
	// virtio-serial port closes): wait for STOP, skipping them.
	stopWait := time.After(10 * time.Second)
waitStop:
	for {
		select {
		case e := <-qmpEvents:
			t.Logf("QMP event after suspend: %s %v", e.Event, e.Data)
			if e.Event == "STOP" {
				break waitStop
			}
		case <-stopWait:
			t.Errorf("no QMP STOP event within 10s of suspending")
			break waitStop
		}
	}
	if st, err := l.QueryStatus(ctx, spec.Name); err != nil || st.Running || st.Status != "paused" {
		t.Errorf("QueryStatus of a suspended guest = %+v, %v, want paused", st, err)
	}

	if err := l.Destroy(ctx, spec.Name); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := l.Lookup(ctx, spec.Name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup after Destroy: %v, want ErrNotFound", err)
	}
}

// TestVirshDestroyEmitsStopped boots a guest, waits until it is up, kills it from
// outside with `virsh destroy` and expects the stopped event within 2 seconds of virsh
// returning (virsh itself takes 1-2 s under TCG while QEMU tears down; the event is
// emitted as QEMU exits, so it usually arrives before virsh returns).
func TestVirshDestroyEmitsStopped(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	g := testguest.Build(t, testguest.Options{Script: `echo up > "$PORT"
sleep 3600`})
	cfg := DefaultConfig()
	cfg.URI = uri
	l := mustConnect(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	events, err := l.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spec := bootSpec(t, g, "paddock-hvkill-"+randHex(t))
	createGuest(t, ctx, l, spec)
	if line := readLine(t, spec.Channels[0].SocketPath, 120*time.Second); line != "up" {
		t.Fatalf("guest wrote %q, want up", line)
	}

	killed := time.Now()
	if out, err := exec.Command("virsh", "-c", uri, "destroy", spec.Name).CombinedOutput(); err != nil {
		t.Fatalf("virsh destroy: %v: %s", err, out)
	}
	t.Logf("virsh destroy took %v", time.Since(killed).Round(time.Millisecond))
	timeout := time.After(2 * time.Second)
	var seen []string
	for {
		select {
		case e := <-events:
			seen = append(seen, e.Domain+":"+string(e.Type)+"/"+e.Detail)
			if e.Domain == spec.Name && e.Type == EventStopped {
				t.Logf("stopped/%s event %v after virsh destroy started", e.Detail, e.Time.Sub(killed).Round(time.Millisecond))
				if e.Detail != "destroyed" {
					t.Errorf("detail = %q, want destroyed", e.Detail)
				}
				return
			}
		case <-timeout:
			t.Fatalf("no stopped event for %s within 2s of virsh destroy (saw %v)", spec.Name, seen)
		}
	}
}

// TestConnectErrors: bad configuration and unreachable libvirt are clear errors naming
// the field; accel kvm where KVM cannot work is refused before libvirt is called.
func TestConnectErrors(t *testing.T) {
	pvm := filepath.Join(t.TempDir(), "cpuinfo")
	if err := os.WriteFile(pvm, []byte(cpuinfoPVM), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		cfg   Config
		opts  []Opt
		class error
		field string // for *FieldError
		ismsg string
	}{
		{"unreachable tcp", Config{URI: "qemu+tcp://127.0.0.1:1/system", Prefix: "paddock-", Accel: AccelTCG}, nil, ErrUnavailable, "", "hypervisor.uri"},
		{"missing socket", Config{URI: "qemu+unix:///system?socket=/nonexistent/libvirt-sock", Prefix: "paddock-", Accel: AccelTCG}, nil, ErrUnavailable, "", "hypervisor.uri"},
		{"kvm on paravirtual kvm", Config{URI: "qemu+tcp://127.0.0.1:1/system", Prefix: "paddock-", Accel: AccelKVM},
			[]Opt{WithHostProbe(pvm, "/dev/null")}, ErrInvalid, "hypervisor.accel", "tcg"},
		{"kvm without device", Config{URI: "qemu+tcp://127.0.0.1:1/system", Prefix: "paddock-", Accel: AccelKVM},
			[]Opt{WithHostProbe(pvm, "/nonexistent/kvm")}, ErrInvalid, "hypervisor.accel", "auto"},
		{"bad accel", Config{URI: "qemu:///system", Prefix: "paddock-", Accel: "fast"}, nil, ErrInvalid, "hypervisor.accel", "fast"},
		{"empty prefix", Config{URI: "qemu:///system", Accel: AccelAuto}, nil, ErrInvalid, "hypervisor.prefix", "prefix"},
		{"empty uri", Config{Prefix: "paddock-", Accel: AccelAuto}, nil, ErrInvalid, "hypervisor.uri", "qemu:///system"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			l, err := Connect(ctx, c.cfg, append([]Opt{WithLogger(logger(t))}, c.opts...)...)
			if err == nil {
				l.Close()
				t.Fatal("Connect succeeded")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, c.class) {
				t.Errorf("err = %v, want class %v", err, c.class)
			}
			if c.field != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != c.field {
					t.Errorf("err = %v, want a *FieldError for %s", err, c.field)
				}
			}
			if !strings.Contains(err.Error(), c.ismsg) {
				t.Errorf("error %q does not mention %q", err, c.ismsg)
			}
		})
	}
}

// TestConnectKVMOnThisHost: where this host's KVM cannot work (no vmx/svm, as on the
// paravirtual-KVM development machines), accel kvm is refused; where it can, it is chosen.
func TestConnectKVMOnThisHost(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	h := ProbeHost(DefaultCPUInfoPath, DefaultKVMDevice)
	usable, why := h.KVMUsable()
	t.Logf("KVM usable here: %v (%s)", usable, why)
	cfg := Config{URI: uri, Prefix: DefaultPrefix, Accel: AccelKVM}
	l, err := Connect(context.Background(), cfg, WithLogger(logger(t)))
	if usable {
		if err != nil {
			t.Fatalf("Connect with accel kvm on a KVM host: %v", err)
		}
		defer l.Close()
		if l.Accel().DomainType != "kvm" {
			t.Fatalf("accel = %+v", l.Accel())
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "hypervisor.accel" {
		t.Fatalf("Connect with accel kvm where KVM cannot work: err = %v, want a *FieldError for hypervisor.accel", err)
	}
}

// TestPrefixIsolation: a Hypervisor never lists, reports events for, or acts on domains
// without its prefix. libvirt's test:///default is shared by all connections in this
// process, so two Hypervisors with different prefixes see the same domains.
func TestPrefixIsolation(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mine := mustConnect(t, Config{URI: "test:///default", Prefix: "paddock-mine-", Accel: AccelAuto})
	other := mustConnect(t, Config{URI: "test:///default", Prefix: "paddock-", Accel: AccelAuto})
	mineEvents, _ := mine.Events(ctx)
	otherEvents, _ := other.Events(ctx)

	foreign := "paddock-other-" + randHex(t)
	own := "paddock-mine-" + randHex(t)
	for _, c := range []struct {
		l    *Libvirt
		name string
	}{{other, foreign}, {mine, own}} {
		if _, err := c.l.Create(ctx, DomainSpec{Name: c.name, VCPUs: 1, MemoryMiB: 64, Kernel: kernel, Initrd: initrd}); err != nil {
			t.Fatal(err)
		}
		defer c.l.Destroy(context.Background(), c.name)
	}
	list, err := mine.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != own {
		t.Fatalf("List = %+v, want only %s (not %s, nor the test driver's own domain \"test\")", list, own, foreign)
	}
	all, _ := other.List(ctx)
	if len(all) != 2 {
		t.Fatalf("the other Hypervisor lists %+v, want both paddock- domains", all)
	}
	stats, err := mine.Stats(ctx)
	if err != nil || len(stats) != 1 || stats[0].Name != own {
		t.Fatalf("Stats() = %+v, %v, want only %s", stats, err, own)
	}
	for _, op := range []func() error{
		func() error { return mine.Destroy(ctx, foreign) },
		func() error { return mine.Shutdown(ctx, foreign, time.Second) },
		func() error { _, err := mine.Lookup(ctx, foreign); return err },
		func() error { return mine.Destroy(ctx, "test") },
	} {
		var fe *FieldError
		if err := op(); !errors.As(err, &fe) || fe.Field != "name" {
			t.Errorf("operation on a foreign name: err = %v, want a *FieldError for name", err)
		}
	}
	if _, err := other.Lookup(ctx, foreign); err != nil {
		t.Fatalf("the refused operations touched %s: %v", foreign, err)
	}
	// The other Hypervisor sees both starts; mine sees only its own.
	if err := other.Destroy(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(2 * time.Second)
	gotOther := map[string]bool{}
	for !(gotOther[foreign+" stopped"] && gotOther[own+" started"]) {
		select {
		case e := <-otherEvents:
			gotOther[e.Domain+" "+string(e.Type)] = true
		case <-deadline:
			t.Fatalf("the paddock- Hypervisor saw %v, want %s stopped and %s started", gotOther, foreign, own)
		}
	}
	for {
		select {
		case e := <-mineEvents:
			if e.Domain != own {
				t.Fatalf("Hypervisor with prefix paddock-mine- got an event for %s", e.Domain)
			}
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

// BenchmarkBootToVirtioSerial measures Create → first line on the virtio-serial port →
// Destroy for a 1-vCPU, 256 MiB busybox guest. Run with:
//
//	sudo go test ./hypervisor/ -run '^$' -bench BootToVirtioSerial -benchtime 3x
func BenchmarkBootToVirtioSerial(b *testing.B) {
	uri := testutil.RequireLibvirt(b)
	g := testguest.Build(b, testguest.Options{Script: `echo up > "$PORT"
sleep 3600`})
	cfg := DefaultConfig()
	cfg.URI = uri
	l := mustConnect(b, cfg)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		spec := bootSpec(b, g, "paddock-hvbench-"+randHex(b))
		spec.Labels = nil
		if _, err := l.Create(ctx, spec); err != nil {
			b.Fatal(err)
		}
		line, err := readLineErr(spec.Channels[0].SocketPath, 120*time.Second)
		l.Destroy(ctx, spec.Name)
		if err != nil || line != "up" {
			b.Fatalf("guest wrote %q: %v", line, err)
		}
	}
}
