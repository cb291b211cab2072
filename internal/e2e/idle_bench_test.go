package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/vmpool"
)

// BenchmarkIdleGuest: what an idle guest costs, beside a plain busybox guest of the
// same memory booted by the same libvirt from the same domain XML generator (the
// baseline), in the same run. `paddock dev` boots PADDOCK_BENCH_GUESTS guests (default
// 1) of PADDOCK_BENCH_MEMORY MiB (default 384, dev's default); once every agent has
// registered and reported its memory, and after a settling pause, each QEMU process
// is sampled over a window (idleWindow):
//
//   - MiB-host-rss/guest, MiB-host-pss/guest (PSS: what KSM sharing, when the
//     operator enabled it, takes off) and cpu%/idle-guest (of one core), with the
//     same three for the baseline;
//   - MiB-agent-rss (the agent process in the guest, from its heartbeat through
//     `paddock vm ls`'s API) and MiB-handlers-rss with handlers-up;
//   - s/ready-to-registered: the guest's ready line (the host daemon's "guest
//     ready") → its agent registered (the server's "agent registered"), from dev.log;
//   - ksm-pages-sharing, when /sys/kernel/mm/ksm/run is 1 (never enabled here).
//
// PADDOCK_BENCH_WARM=snapshot measures guests restored from a memory snapshot instead
// of cold-booted ones: a first `paddock dev --warm-start snapshot` makes the pool's
// snapshot (its template) and stops, and the measured one, on the same data directory,
// restores every guest from it.
//
// Then it submits one test.sleep task of 5 s per guest at once and reports the most
// that ran at the same time (tasks-concurrent) and whether all succeeded — the pool
// still answers with that many guests up. Run it with:
//
//	sudo go test ./internal/e2e/ -run '^$' -bench IdleGuest -benchtime 1x -timeout 60m
//	sudo PADDOCK_BENCH_WARM=snapshot go test ./internal/e2e/ -run '^$' -bench IdleGuest -benchtime 1x -timeout 60m
//	sudo PADDOCK_BENCH_GUESTS=40 go test ./internal/e2e/ -run '^$' -bench IdleGuest -benchtime 1x -timeout 120m
func BenchmarkIdleGuest(b *testing.B) {
	guests := envInt(b, "PADDOCK_BENCH_GUESTS", 1)
	memory := envInt(b, "PADDOCK_BENCH_MEMORY", 384)
	g := newGuestEnv(b)
	bin := binaries(b)

	// The baseline first, so the dev guests' boots do not slow it.
	base := bootBaseline(b, g, memory)

	saved := readyWait
	readyWait = time.Duration(guests) * 6 * time.Minute
	defer func() { readyWait = saved }()
	dir := dataDir(b)
	args := []string{"--guests", strconv.Itoa(guests), "--max-guests", strconv.Itoa(guests), "--memory", strconv.Itoa(memory), "--boot-timeout", "20m"}
	switch warm := os.Getenv("PADDOCK_BENCH_WARM"); warm {
	case "", vmpool.WarmCold:
	case vmpool.WarmSnapshot:
		args = append(args, "--warm-start", warm)
		makeSnapshot(b, g, bin, dir, args)
	default:
		b.Fatalf("PADDOCK_BENCH_WARM=%q: use %q or %q", warm, vmpool.WarmCold, vmpool.WarmSnapshot)
	}
	p := startDev(b, g, bin, dir, args...)
	api := paddockv1connect.NewClusterServiceClient(http.DefaultClient, p.api, connect.WithInterceptors(bearer(p.token)))
	var vms []*paddockv1.VM
	waitUntil(b, "every agent registered and reporting its memory", readyWait, func() bool {
		r, err := api.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
		if err != nil {
			return false
		}
		n := 0
		for _, v := range r.Msg.GetVms() {
			if v.GetAgent() == "connected" && v.GetAgentRssBytes() > 0 {
				n++
			}
		}
		vms = r.Msg.GetVms()
		return n == guests
	})
	time.Sleep(20 * time.Second) // settle: the first heartbeats, the balloon's first reports

	b.ResetTimer()
	names := []string{base}
	for _, v := range vms {
		names = append(names, v.GetName())
	}
	samples := sampleQEMU(b, names, idleWindow)
	b.StopTimer()
	for i, n := range names {
		if i > 1 {
			break // the baseline and one Paddock guest
		}
		if s, err := smapsBreakdown(qemuPID(b, n), memory, vmpool.DefaultTBCacheMiB); err == nil {
			b.Logf("%s: %s", n, s)
		}
		// The guest's own view (virtio-balloon statistics, KiB): what it uses vs what the host holds.
		if out, err := exec.Command("virsh", "-c", g.uri, "dommemstat", n).Output(); err == nil {
			b.Logf("%s: dommemstat %s", n, strings.Join(strings.Fields(string(out)), " "))
		}
	}

	var rss, pss, cpu float64
	for _, s := range samples[1:] {
		rss, pss, cpu = rss+s.rssMiB, pss+s.pssMiB, cpu+s.cpuPct
	}
	n := float64(guests)
	b.ReportMetric(rss/n, "MiB-host-rss/guest")
	b.ReportMetric(pss/n, "MiB-host-pss/guest")
	b.ReportMetric(cpu/n, "cpu%/idle-guest")
	b.ReportMetric(samples[0].rssMiB, "MiB-host-rss-baseline")
	b.ReportMetric(samples[0].pssMiB, "MiB-host-pss-baseline")
	b.ReportMetric(samples[0].cpuPct, "cpu%-baseline")

	r, err := api.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
	if err != nil {
		b.Fatal(err)
	}
	var agentRSS, agentAnon, handlersRSS, up float64
	for _, v := range r.Msg.GetVms() {
		agentRSS += float64(v.GetAgentRssBytes()) / (1 << 20)
		agentAnon += float64(v.GetAgentAnonBytes()) / (1 << 20)
		handlersRSS += float64(v.GetHandlersRssBytes()) / (1 << 20)
		up += float64(v.GetHandlersUp())
	}
	b.ReportMetric(agentRSS/n, "MiB-agent-rss")
	b.ReportMetric(agentAnon/n, "MiB-agent-anon")
	b.ReportMetric(handlersRSS/n, "MiB-handlers-rss")
	b.ReportMetric(up/n, "handlers-up")
	b.ReportMetric(readyToRegistered(b, filepath.Join(dir, "dev.log")).Seconds(), "s/ready-to-registered")
	if ksm, err := os.ReadFile("/sys/kernel/mm/ksm/run"); err == nil && strings.TrimSpace(string(ksm)) == "1" {
		sharing, _ := os.ReadFile("/sys/kernel/mm/ksm/pages_sharing")
		v, _ := strconv.ParseFloat(strings.TrimSpace(string(sharing)), 64)
		b.ReportMetric(v, "ksm-pages-sharing")
	}

	// The pool answers: one 5 s task per guest, all at once.
	ids := make([]string, guests)
	for i := range ids {
		ids[i] = strings.TrimSpace(string(p.run(b, bin, "task", "submit", "-q", "--type", "test.sleep", "--payload", "5s", "--timeout", "30m")))
	}
	most := 0
	waitUntil(b, "the tasks to finish", time.Duration(guests)*5*time.Minute, func() bool {
		r, err := api.ListVMs(context.Background(), connect.NewRequest(&paddockv1.ListVMsRequest{}))
		if err != nil {
			return false
		}
		running := 0
		for _, v := range r.Msg.GetVms() {
			running += int(v.GetRunning())
		}
		most = max(most, running)
		for _, id := range ids {
			var tk taskJSON
			if err := json.Unmarshal(p.run(b, bin, "task", "get", id, "--json"), &tk); err != nil || !strings.HasPrefix(tk.State, "STATE_SUCCEEDED") {
				return false
			}
		}
		return true
	})
	b.ReportMetric(float64(most), "tasks-concurrent")
	b.Logf("%d idle guests of %d MiB: host RSS %.1f MiB/guest (baseline %.1f), idle CPU %.2f%%/guest (baseline %.2f%%), agent RSS %.1f MiB, %d tasks at once",
		guests, memory, rss/n, samples[0].rssMiB, cpu/n, samples[0].cpuPct, agentRSS/n, most)
}

// makeSnapshot runs paddock dev with args (which ask for a snapshot warm start) on dir
// until its pool has saved its snapshot, and stops it: the next paddock dev on dir
// restores its guests from that snapshot.
func makeSnapshot(b *testing.B, g guestEnv, bin, dir string, args []string) {
	b.Helper()
	p := startDev(b, g, bin, dir, args...)
	waitUntil(b, "the pool's snapshot", readyWait, func() bool {
		log, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
		return strings.Contains(string(log), `"warm start: snapshot saved"`)
	})
	if !p.stop() {
		b.Fatalf("paddock dev (making the snapshot) did not stop cleanly: %s", p.errput())
	}
}

// bootBaseline boots the plain busybox guest (internal/testguest, which idles once its
// port is open) of memory MiB with the pools' XML, kernel command line and TB cache,
// waits for its line on the port, and returns its name; cleanup destroys it.
func bootBaseline(b *testing.B, g guestEnv, memory int) string {
	b.Helper()
	tg := testguest.Build(b, testguest.Options{Script: `echo baseline-up > "$PORT"; while true; do sleep 3600; done`})
	name := g.prefix + "baseline"
	spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: memory, Kernel: tg.Kernel, Initrd: tg.Initrd,
		Cmdline: vmpool.DefaultCmdline, TBCacheMiB: vmpool.DefaultTBCacheMiB,
		Channels: []hypervisor.Channel{{Name: testguest.PortName, SocketPath: filepath.Join(tg.Dir, "port.sock")}}}
	x, err := spec.XML(hypervisor.AccelTCG)
	if err != nil {
		b.Fatal(err)
	}
	xmlPath := filepath.Join(tg.Dir, "baseline.xml")
	if err := os.WriteFile(xmlPath, []byte(x), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("virsh", "-c", g.uri, "create", xmlPath).CombinedOutput(); err != nil {
		b.Fatalf("virsh create of the baseline: %v: %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("virsh", "-c", g.uri, "destroy", name).Run() })
	var conn net.Conn
	waitUntil(b, "the baseline guest's port", readyWait, func() bool {
		conn, err = net.Dial("unix", spec.Channels[0].SocketPath)
		return err == nil
	})
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(readyWait))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "baseline-up") {
		b.Fatalf("baseline guest: read %q, %v", line, err)
	}
	return name
}

// qemuSample is one QEMU process over a window.
type qemuSample struct {
	rssMiB, pssMiB, cpuPct float64
}

// sampleQEMU finds each named guest's QEMU process and measures its CPU over window
// (user+system ticks) and its VmRSS and PSS at the end.
func sampleQEMU(b *testing.B, names []string, window time.Duration) []qemuSample {
	b.Helper()
	pids := make([]int, len(names))
	t0 := make([]float64, len(names))
	for i, n := range names {
		pids[i] = qemuPID(b, n)
		t0[i] = cpuTicks(b, pids[i])
	}
	start := time.Now()
	time.Sleep(window)
	wall := time.Since(start).Seconds()
	out := make([]qemuSample, len(names))
	for i, pid := range pids {
		out[i].cpuPct = 100 * (cpuTicks(b, pid) - t0[i]) / 100 / wall // USER_HZ is 100 on Linux
		out[i].rssMiB = procKiB(b, fmt.Sprintf("/proc/%d/status", pid), "VmRSS") / 1024
		out[i].pssMiB = procKiB(b, fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss") / 1024
	}
	return out
}

// qemuPID is the pid of the QEMU process running domain name.
func qemuPID(b *testing.B, name string) int {
	b.Helper()
	out, err := exec.Command("pgrep", "-f", "guest="+name+",").Output()
	if err != nil {
		b.Fatalf("no QEMU process for %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(out))[0])
	if err != nil {
		b.Fatal(err)
	}
	return pid
}

func cpuTicks(b *testing.B, pid int) float64 {
	b.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command (which may hold spaces) start after the last ')'.
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64) // utime is field 14 of stat: index 11 here
	s, _ := strconv.ParseFloat(f[12], 64)
	return u + s
}

// procKiB reads "key: <n> kB" from a /proc file.
func procKiB(b *testing.B, path, key string) float64 {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == key {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	b.Fatalf("%s has no %s", path, key)
	return 0
}

// readyToRegistered averages, over the guests in dev.log, the time from the host
// daemon's "guest ready" to the server's "agent registered" of the same guest.
func readyToRegistered(b *testing.B, logPath string) time.Duration {
	b.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		b.Fatal(err)
	}
	ready := map[string]time.Time{}
	var sum time.Duration
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		var e struct {
			Time         time.Time `json:"time"`
			Msg          string    `json:"msg"`
			Guest, Agent string
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		switch {
		case e.Msg == "guest ready":
			ready[e.Guest] = e.Time
		case e.Msg == "agent registered" && !ready[e.Agent].IsZero():
			sum += e.Time.Sub(ready[e.Agent])
			n++
			delete(ready, e.Agent)
		}
	}
	if n == 0 {
		b.Fatalf("no guest ready → agent registered pair in %s", logPath)
	}
	return sum / time.Duration(n)
}

func waitUntil(b testing.TB, what string, d time.Duration, ok func() bool) {
	b.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			b.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

func envInt(b *testing.B, key string, def int) int {
	b.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", key, v)
	}
	return n
}

// bearer adds the dev client token to every call.
func bearer(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}
}
