package hostd_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// BenchmarkScaleUpToRegistered: per iteration, one task on a pool with min_idle 0
// makes the pool boot a guest; reported: scale-up decision → ready line, decision →
// agent registered with the server (through the relay), and beside it, in the same
// run, a raw `virsh create` of the same image → ready line.
func BenchmarkScaleUpToRegistered(b *testing.B) {
	pool := "bn" + randHex(2)
	e := start(b, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 1, IdleTimeout: time.Second, TaskTypes: []string{"test.sleep"}}}, hostload.Thresholds{})
	var ready, registered, raw time.Duration
	b.ResetTimer()
	for range b.N {
		e.wait(e.submit("test.sleep", "1ms"), bootWait) // the pool scales for its task type test.sleep
		gs := e.guests(pool)
		if len(gs) != 1 {
			b.Fatalf("guests %+v", gs)
		}
		g := gs[0]
		a := e.agents()[g.Name]
		ready += g.BootTime
		registered += time.UnixMilli(a.GetConnectedAtUnixMs()).Sub(g.Created)
		e.waitFor("scale-down to 0", 2*time.Minute, func() bool { return len(e.guests(pool)) == 0 })
		raw += rawVirshCreate(b, e.uri, e.img, e.runDir)
	}
	b.StopTimer()
	n := time.Duration(b.N)
	b.ReportMetric((ready / n).Seconds(), "s/decision-to-ready")
	b.ReportMetric((registered / n).Seconds(), "s/decision-to-registered")
	b.ReportMetric((raw / n).Seconds(), "s/virsh-create-to-ready")
}

// BenchmarkIdleGuestsCPU: CPU used by this process — the host daemon and, in the same
// process, the server — over 20 s with 3 idle guests (heartbeats relayed every 500 ms),
// per guest. 10 TCG guests do not fit this 2-core machine beside the other work.
func BenchmarkIdleGuestsCPU(b *testing.B) {
	const guests = 3
	pool := "ic" + randHex(2)
	e := start(b, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: guests, Max: guests, IdleTimeout: time.Hour}}, hostload.Thresholds{})
	e.waitFor("guests registered", bootWait, func() bool { return len(e.registered(pool)) == guests })
	time.Sleep(5 * time.Second)
	b.ResetTimer()
	var used, wall time.Duration
	for range b.N {
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		t0 := time.Now()
		time.Sleep(20 * time.Second)
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		wall += time.Since(t0)
		used += time.Duration(r1.Utime.Nano()+r1.Stime.Nano()-r0.Utime.Nano()-r0.Stime.Nano()) * time.Nanosecond
	}
	b.StopTimer()
	pct := 100 * used.Seconds() / wall.Seconds()
	b.ReportMetric(pct, "cpu%-daemon+server")
	b.ReportMetric(pct/guests, "cpu%/idle-guest")
}

func rawVirshCreate(b *testing.B, uri string, img images.Image, runDir string) time.Duration {
	name := "paddock-hdbraw-" + randHex(4)
	dir := filepath.Join(runDir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 256, Kernel: img.Kernel(), Initrd: img.Initrd(), Cmdline: vmpool.GuestCmdline(vmpool.DefaultCmdline, name),
		Channels: []hypervisor.Channel{{Name: agent.DefaultPort, SocketPath: filepath.Join(dir, "agent.sock")}}, ConsoleLog: filepath.Join(dir, "console.log")}
	if d, ok := vmpool.HandlerDisk(img, "vda"); ok {
		spec.Disks = []hypervisor.Disk{d}
	}
	x, err := spec.XML(hypervisor.AccelTCG)
	if err != nil {
		b.Fatal(err)
	}
	xmlPath := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlPath, []byte(x), 0o644); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if out, err := exec.Command("virsh", "-c", uri, "create", xmlPath).CombinedOutput(); err != nil {
		b.Fatalf("virsh create: %v: %s", err, out)
	}
	defer exec.Command("virsh", "-c", uri, "destroy", name).Run()
	var conn net.Conn
	for deadline := time.Now().Add(bootWait); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("unix", spec.Channels[0].SocketPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(bootWait))
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("reading the ready line of %s: %v", name, err)
		}
		if strings.HasPrefix(line, agent.ReadyPrefix) {
			return time.Since(start)
		}
	}
}
