package agent

import (
	"bufio"
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/paddockvm/paddock/agent/session"
	"github.com/paddockvm/paddock/plugins/runner"
)

// procFields reads "Key: <n> kB" lines of a /proc file (meminfo, <pid>/status) and
// returns the values asked for, in bytes; a missing file or key is 0.
func procFields(path string, keys ...string) []int64 {
	out := make([]int64, len(keys))
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for i, want := range keys {
			if k == want {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				out[i] = kb * 1024
			}
		}
	}
	return out
}

// memTotal reads MemTotal from /proc/meminfo, in bytes (0 when unknown).
func memTotal() int64 { return procFields("/proc/meminfo", "MemTotal")[0] }

// memoryOf returns the session's Config.Memory for an agent running r's handlers:
// the machine's memory in use, the agent's own VmRSS, and its running handler
// processes' VmRSS summed (read from /proc at each call; a handler that just exited
// counts 0).
func memoryOf(r *runner.Runner) func() session.Memory {
	return func() session.Memory {
		mi := procFields("/proc/meminfo", "MemTotal", "MemAvailable")
		self := procFields("/proc/self/status", "VmRSS", "RssAnon")
		m := session.Memory{AgentRSS: self[0], AgentAnon: self[1]}
		if mi[0] > 0 && mi[1] > 0 {
			m.GuestUsed = mi[0] - mi[1]
		}
		for _, h := range r.Status() {
			if h.Up && h.PID > 0 {
				m.HandlersUp++
				m.HandlersRSS += procFields("/proc/"+strconv.Itoa(h.PID)+"/status", "VmRSS")[0]
			}
		}
		return m
	}
}

// agentGCPercent is the agent's GOGC unless the environment sets GOGC: an idle agent
// allocates little (its heartbeats), and a heap allowed to grow by a quarter of what
// is live (heap, stacks and globals: about 2.3 MiB in an idle agent) instead of twice
// keeps the guest's (and so the host's) memory down for a little GC work; the
// runtime's floor for the goal scales with it too (4 MiB × GOGC/100). From 50, with
// shared gRPC write buffers: 3.4 → 3.3 MiB anonymous in an idle guest. Tasks' data
// goes through files, not the agent's heap, so a busy agent collects more often but
// over a small heap.
const agentGCPercent = 25

// tuneGC applies agentGCPercent unless GOGC is set.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
}

// onRegistered returns the session's OnRegistered: the first time (the first
// registration) it collects the garbage of start-up (configuration, manifest, gRPC
// set-up) and returns the freed pages to the guest kernel at once, instead of when the
// runtime's scavenger gets to them (with free page reporting they go back to the host);
// it makes the handlers' TLS client certificate (Runner.PrepareCert) in the background;
// with handler_start eager it then starts every handler in the background; and it calls
// then, when not nil (a restored copy's memory work: reportRestored).
func onRegistered(ctx context.Context, cfg Config, r *runner.Runner, then func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			debug.FreeOSMemory()
			// The handlers' TLS client certificate now, while idle, not in a first
			// task's start (after a warm start's restore: each guest its own key).
			go func() { _ = r.PrepareCert() }()
			if cfg.HandlerStart == HandlerStartEager {
				go r.StartAll(ctx)
			}
			if then != nil {
				then()
			}
		})
	}
}
