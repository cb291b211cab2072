package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkFirstTask: submit → handler start of the first task of a handler on an idle
// snapshot-restored guest (the agent unpacks, verifies and starts the handler: lazy
// handler_start), beside the second task on the same guest (the handler already
// running), in the same run. `paddock dev --warm-start snapshot` restores
// PADDOCK_BENCH_CONCURRENT+1 guests (default 4+1) of 384 MiB; then, with test.echo
// (testhandler):
//
//  1. one task alone: the first on its guest (first-alone);
//  2. PADDOCK_BENCH_CONCURRENT tasks at once: those on a guest whose testhandler had
//     not started are firsts (first-burst), any other a second;
//  3. PADDOCK_BENCH_CONCURRENT tasks at once again: all seconds (second-burst);
//  4. one task alone again: a second (second-alone).
//
// Each task's latency is its attempt's end minus its submission: test.echo does no
// work, so this is submit → handler start (the agent's wall time of a first task
// includes the handler's start). It reports the means in ms with first/second ratios,
// and the first start's parts as the agents logged them on their consoles ("handler
// started": unpack, verify, cert, exec_to_handshake, tls, describe, start; the mean
// over the guests that started testhandler). Before the tasks, with the guests idle,
// it reports what they hold: MiB-host-rss/guest (each QEMU process's VmRSS) and
// MiB-handlers-rss/guest (the guests' handler processes, from the agents' heartbeats),
// to weigh handlers started in the template (--handler-start eager,
// PADDOCK_BENCH_HANDLER_START=eager) against lazily. Run:
//
//	sudo go test ./internal/e2e/ -run '^$' -bench FirstTask -benchtime 1x -timeout 60m -v
//	sudo PADDOCK_BENCH_CONCURRENT=8 go test ./internal/e2e/ -run '^$' -bench FirstTask -benchtime 1x -timeout 60m
//
// PADDOCK_BENCH_WARM_START=cold boots the guests instead.
func BenchmarkFirstTask(b *testing.B) {
	n := envInt(b, "PADDOCK_BENCH_CONCURRENT", 4)
	warm := os.Getenv("PADDOCK_BENCH_WARM_START")
	if warm == "" {
		warm = "snapshot"
	}
	guests := n + 1
	g := newGuestEnv(b)
	bin := binaries(b)
	saved := readyWait
	readyWait = time.Duration(guests) * 4 * time.Minute
	defer func() { readyWait = saved }()
	dir := dataDir(b)
	args := []string{"--guests", strconv.Itoa(guests), "--max-guests", strconv.Itoa(guests),
		"--memory", "384", "--warm-start", warm, "--boot-timeout", "20m"}
	if hs := os.Getenv("PADDOCK_BENCH_HANDLER_START"); hs != "" {
		args = append(args, "--handler-start", hs)
	}
	p := startDev(b, g, bin, dir, args...)
	waitAgents(b, p, bin, guests, nil)
	if warm == "snapshot" {
		// The first guests boot cold while the template is made: once the snapshot is
		// saved, destroy them, and the pool restores their replacements.
		waitUntil(b, "the warm-start snapshot", readyWait, func() bool {
			log, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
			return strings.Contains(string(log), "warm start: snapshot saved")
		})
		cold := map[string]bool{}
		for _, n := range guestsWithPrefix(b, g.uri, g.prefix) {
			cold[n] = true
			if out, err := exec.Command("virsh", "-c", g.uri, "destroy", n).CombinedOutput(); err != nil {
				b.Logf("virsh destroy %s: %v: %s", n, err, out) // the template, gone meanwhile
			}
		}
		waitAgents(b, p, bin, guests, cold)
	}
	time.Sleep(20 * time.Second) // settle: restores' first heartbeats

	var vms struct {
		VMs []struct {
			Name             string `json:"name"`
			HandlersRssBytes string `json:"handlersRssBytes"`
		} `json:"vms"`
	}
	if err := json.Unmarshal(p.run(b, bin, "vm", "ls", "--json"), &vms); err != nil {
		b.Fatal(err)
	}
	var hostRSS, handlersRSS float64
	for _, v := range vms.VMs {
		hostRSS += procKiB(b, "/proc/"+strconv.Itoa(qemuPID(b, v.Name))+"/status", "VmRSS") / 1024
		h, _ := strconv.ParseFloat(v.HandlersRssBytes, 64)
		handlersRSS += h / (1 << 20)
	}

	b.ResetTimer()
	started := map[string]bool{} // agents whose testhandler has run a task
	var firstAlone, secondAlone, firstBurst, secondBurst []time.Duration
	classify := func(tks []taskJSON, first, second *[]time.Duration) {
		for _, tk := range tks {
			a := tk.Attempts[len(tk.Attempts)-1].AgentID
			if started[a] {
				*second = append(*second, taskEnd(b, tk).Sub(taskCreated(b, tk)))
			} else {
				*first = append(*first, taskEnd(b, tk).Sub(taskCreated(b, tk)))
			}
		}
		for _, tk := range tks {
			started[tk.Attempts[len(tk.Attempts)-1].AgentID] = true
		}
	}
	var discard []time.Duration
	classify(submitAtOnce(b, p, bin, 1), &firstAlone, &secondAlone)
	classify(submitAtOnce(b, p, bin, n), &firstBurst, &discard)
	classify(submitAtOnce(b, p, bin, n), &discard, &secondBurst)
	classify(submitAtOnce(b, p, bin, 1), &discard, &secondAlone)
	b.StopTimer()

	ms := func(ds []time.Duration) float64 {
		if len(ds) == 0 {
			return 0
		}
		var s time.Duration
		for _, d := range ds {
			s += d
		}
		return float64(s.Milliseconds()) / float64(len(ds))
	}
	ratio := func(a, b float64) float64 { return a / max(b, 1) }
	b.ReportMetric(hostRSS/float64(len(vms.VMs)), "MiB-host-rss/guest") // after ResetTimer, which drops metrics
	b.ReportMetric(handlersRSS/float64(len(vms.VMs)), "MiB-handlers-rss/guest")
	b.ReportMetric(ms(firstAlone), "ms-first-alone")
	b.ReportMetric(ms(secondAlone), "ms-second-alone")
	b.ReportMetric(ratio(ms(firstAlone), ms(secondAlone)), "first/second-alone")
	b.ReportMetric(ms(firstBurst), "ms-first-burst")
	b.ReportMetric(float64(len(firstBurst)), "firsts-in-burst")
	b.ReportMetric(ms(secondBurst), "ms-second-burst")
	b.ReportMetric(ratio(ms(firstBurst), ms(secondBurst)), "first/second-burst")
	b.Logf("first alone %v, second alone %v; %d at once: firsts %v, seconds %v", firstAlone, secondAlone, n, firstBurst, secondBurst)

	parts := handlerStartParts(b, g.prefix, "testhandler")
	keys := make([]string, 0, len(parts))
	for k := range parts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := parts[k]
		var s float64
		for _, x := range v {
			s += x
		}
		b.ReportMetric(s/float64(len(v)), "start-"+strings.TrimSuffix(k, "_ms")+"-ms")
		b.Logf("handler start %s: %v", k, v)
	}
}

// waitAgents waits until n agents of guests not in old are connected.
func waitAgents(b *testing.B, p *devProc, bin string, n int, old map[string]bool) {
	b.Helper()
	waitUntil(b, strconv.Itoa(n)+" agents connected", readyWait, func() bool {
		out, err := p.cli(bin, "vm", "ls", "--json")
		if err != nil {
			return false
		}
		var vms struct {
			VMs []struct {
				Name  string `json:"name"`
				Agent string `json:"agent"`
			} `json:"vms"`
		}
		if json.Unmarshal([]byte(out), &vms) != nil {
			return false
		}
		k := 0
		for _, v := range vms.VMs {
			if v.Agent == "connected" && !old[v.Name] {
				k++
			}
		}
		return k >= n
	})
}

// submitAtOnce submits k test.echo tasks at once and returns them once all ended;
// each must have succeeded.
func submitAtOnce(b *testing.B, p *devProc, bin string, k int) []taskJSON {
	b.Helper()
	ids := make([]string, k)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = strings.TrimSpace(string(p.run(b, bin, "task", "submit", "-q", "--type", "test.echo", "--payload", "x", "--timeout", "30m")))
		}()
	}
	wg.Wait()
	out := make([]taskJSON, k)
	for i, id := range ids {
		_ = p.runMayFail(bin, "task", "wait", id, "--timeout", "30m")
		if err := json.Unmarshal(p.run(b, bin, "task", "get", id, "--json"), &out[i]); err != nil {
			b.Fatal(err)
		}
		if out[i].State != "STATE_SUCCEEDED" || len(out[i].Attempts) == 0 {
			b.Fatalf("task %s ended %s: %s", id, out[i].State, out[i].Error)
		}
		if len(out[i].Attempts) > 1 {
			b.Logf("task %s took %d attempts", id, len(out[i].Attempts))
		}
	}
	return out
}

// handlerStartParts reads the "handler started" lines of handler in the console logs of
// the guests named with prefix (`paddock dev`'s run directory) and returns each *_ms
// field's values.
func handlerStartParts(b *testing.B, prefix, handler string) map[string][]float64 {
	b.Helper()
	logs, _ := filepath.Glob(filepath.Join("/run/paddock", "*", prefix+"*", "console.log"))
	out := map[string][]float64{}
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			if !strings.Contains(l, `msg="handler started"`) || !strings.Contains(l, "handler="+handler+" ") {
				continue
			}
			for _, kv := range strings.Fields(l) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || !strings.HasSuffix(k, "_ms") {
					continue
				}
				if x, err := strconv.ParseFloat(v, 64); err == nil {
					out[k] = append(out[k], x)
				}
			}
		}
		f.Close()
	}
	if len(out) == 0 {
		b.Logf("no \"handler started\" line of %s with timings in %d console logs", handler, len(logs))
	}
	return out
}
