package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The data plane end to end, in real TCG guests through `paddock dev` (server and host
// daemon in one process), driven through the CLI as a user would:
//
//   - a 1 GiB file of random bytes checksummed through `paddock task submit --input`:
//     the digest equals sha256sum's, and the dev process's peak RSS (server and host
//     daemon together) is printed and held under 128 MiB;
//   - the same input again: a cache hit on the host (no byte fetched from the server)
//     that starts sooner;
//   - a 512 MiB file compressed in a guest and the output decompressed in a guest gives
//     back the same bytes.
//
// Run alone: go test -count=1 -run DataPlane -v ./internal/e2e
func TestDataPlane(t *testing.T) {
	bin := binaries(t)
	g := newGuestEnv(t)
	dir := dataDir(t)
	metrics := freeAddr(t)
	p := startDev(t, g, bin, dir, "--guests", "1", "--max-guests", "1", "--metrics-listen", metrics)
	work := t.TempDir()

	big := filepath.Join(work, "big.bin")
	writeRandom(t, big, 1<<30, 1)
	want := sha256sum(t, big)
	rss := watchRSS(p.cmd.Process.Pid) // from the upload on
	defer rss.stop()

	first := p.submit(t, bin, "--type", "checksum", "--payload", `{"algorithms":["sha256"]}`, "--input", "data="+big)
	if got := checksumOf(t, first, "data"); got != want {
		t.Fatalf("the guest's sha256 of the 1 GiB input is %s, sha256sum says %s", got, want)
	}
	fetched1 := hostMetric(t, metrics, "paddock_host_cache_fetched_bytes_total")
	if fetched1 < 1<<30 {
		t.Fatalf("the host fetched %v bytes for a 1 GiB input", fetched1)
	}
	peak := rss.peak()
	t.Logf("1 GiB input fetched by the host and checksummed in a guest %v after its submission: %s; peak RSS of paddock dev (server and host daemon in one process) during it %.1f MiB",
		taskEnd(t, first).Sub(taskCreated(t, first)), want, float64(peak)/(1<<20))
	if peak > 128<<20 {
		t.Errorf("paddock dev's peak RSS %.1f MiB is over 128 MiB while moving a 1 GiB input", float64(peak)/(1<<20))
	}

	// The second run only reads the input (a TCG guest hashes a GiB in minutes): the
	// point is where its bytes come from.
	second := p.submit(t, bin, "--type", "checksum", "--payload", `{"algorithms":[]}`, "--input", "data="+big)
	if got := sizeOf(t, second, "data"); got != 1<<30 {
		t.Fatalf("second run: the handler read %d bytes of the 1 GiB input", got)
	}
	if fetched2 := hostMetric(t, metrics, "paddock_host_cache_fetched_bytes_total"); fetched2 != fetched1 {
		t.Fatalf("the second task on the same input fetched %v bytes from the server; want a cache hit (0)", fetched2-fetched1)
	}
	s1, s2 := startLatency(t, first), startLatency(t, second)
	t.Logf("submit → handler start: first %v (fetched into the host cache), second %v (cache hit): %.1f×", s1, s2, float64(s1)/float64(max(s2, time.Millisecond)))

	// compress then decompress 512 MiB, both in guests.
	mid := filepath.Join(work, "mid.bin")
	writeRandom(t, mid, 512<<20, 2)
	wantMid := sha256sum(t, mid)
	c := p.submitFile(t, bin, "compress.zstd", "data", mid)
	zst := outputBlob(t, c, "data.zst")
	d := p.submit(t, bin, "--type", "decompress.zstd", "--input-blob", "data.zst="+zst)
	back := outputBlob(t, d, "data")
	if back != "sha256:"+wantMid {
		t.Fatalf("decompress(compress(x)) is blob %s; x is sha256:%s", back, wantMid)
	}
	out := filepath.Join(work, "back.bin")
	p.run(t, bin, "task", "output", d.ID, "data", "-o", out, "-q")
	if got := sha256sum(t, out); got != wantMid {
		t.Fatalf("the downloaded output has sha256 %s, want %s", got, wantMid)
	}
	t.Logf("512 MiB compressed (%s) and decompressed in guests: byte-identical; peak RSS of paddock dev %.1f MiB", zst, float64(rss.peak())/(1<<20))
}

// taskJSON is the part of a task (as `paddock task submit --wait --json` prints it)
// the tests read.
type taskJSON struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	Error       string `json:"error"`
	Output      []byte `json:"output"`
	OutputBlobs map[string]struct {
		Digest string `json:"digest"`
		Size   string `json:"size"`
	} `json:"outputBlobs"`
	CreatedAtUnixMs string `json:"createdAtUnixMs"`
	Attempts        []struct {
		Usage struct {
			WallMs string `json:"wallMs"`
		} `json:"usage"`
		FinishedAtUnixMs string `json:"finishedAtUnixMs"`
		AgentID          string `json:"agentId"`
	} `json:"attempts"`
}

func (p *devProc) run(t testing.TB, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "paddock"), args...)
	cmd.Env = append(os.Environ(), "PADDOCK_CLIENT_SERVER="+p.api, "PADDOCK_CLIENT_TOKEN="+p.token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("paddock %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// runMayFail runs the CLI and returns its error (a non-zero exit is not fatal).
func (p *devProc) runMayFail(bin string, args ...string) error {
	cmd := exec.Command(filepath.Join(bin, "paddock"), args...)
	cmd.Env = append(os.Environ(), "PADDOCK_CLIENT_SERVER="+p.api, "PADDOCK_CLIENT_TOKEN="+p.token)
	return cmd.Run()
}

func (p *devProc) submit(t testing.TB, bin string, args ...string) taskJSON {
	t.Helper()
	id := strings.TrimSpace(string(p.run(t, bin, append([]string{"task", "submit", "-q", "--timeout", "30m"}, args...)...)))
	// A TCG guest hashes a GiB slowly on a busy machine: wait as long as the task may run.
	_ = p.runMayFail(bin, "task", "wait", id, "--timeout", "30m")
	out := p.run(t, bin, "task", "get", id, "--json")
	var tk taskJSON
	if err := json.Unmarshal(out, &tk); err != nil {
		t.Fatalf("decoding the task: %v\n%s", err, out)
	}
	if tk.State != "STATE_SUCCEEDED" {
		t.Fatalf("task %s ended %s: %s", tk.ID, tk.State, tk.Error)
	}
	return tk
}

func (p *devProc) submitFile(t testing.TB, bin, typ, name, path string) taskJSON {
	t.Helper()
	return p.submit(t, bin, "--type", typ, "--input", name+"="+path)
}

func checksumOf(t testing.TB, tk taskJSON, input string) string {
	t.Helper()
	var out struct {
		Inputs map[string]struct {
			SHA256 string `json:"sha256"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(tk.Output, &out); err != nil {
		t.Fatalf("task %s: decoding the checksum output %q: %v", tk.ID, tk.Output, err)
	}
	return out.Inputs[input].SHA256
}

func sizeOf(t testing.TB, tk taskJSON, input string) int64 {
	t.Helper()
	var out struct {
		Inputs map[string]struct {
			Size int64 `json:"size"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(tk.Output, &out); err != nil {
		t.Fatalf("task %s: decoding the checksum output %q: %v", tk.ID, tk.Output, err)
	}
	return out.Inputs[input].Size
}

func outputBlob(t testing.TB, tk taskJSON, name string) string {
	t.Helper()
	b, ok := tk.OutputBlobs[name]
	if !ok {
		t.Fatalf("task %s has no output blob %q (it has %v)", tk.ID, name, tk.OutputBlobs)
	}
	return b.Digest
}

// startLatency is from submission to the handler's start (the attempt's end minus the
// handler's wall time, as the agent measured it).
func startLatency(t testing.TB, tk taskJSON) time.Duration {
	t.Helper()
	if len(tk.Attempts) == 0 {
		t.Fatalf("task %s has no attempts", tk.ID)
	}
	a := tk.Attempts[len(tk.Attempts)-1]
	created, _ := strconv.ParseInt(tk.CreatedAtUnixMs, 10, 64)
	finished, _ := strconv.ParseInt(a.FinishedAtUnixMs, 10, 64)
	wall, _ := strconv.ParseInt(a.Usage.WallMs, 10, 64)
	return time.Duration(finished-wall-created) * time.Millisecond
}

// writeRandom writes n pseudo-random bytes (ChaCha8, seeded) to path.
func writeRandom(t testing.TB, path string, n int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s [32]byte
	s[0] = byte(seed)
	r := rand.NewChaCha8(s)
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, r, n); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// sha256sum runs the sha256sum command on path.
func sha256sum(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatalf("sha256sum %s: %v", path, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("sha256sum printed nothing")
	}
	return f[0]
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// hostMetric sums the samples of a counter or gauge on the host daemon's /metrics.
func hostMetric(t testing.TB, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("reading the host daemon's metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != ' ' && l[len(name)] != '{') {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		t.Fatalf("the host daemon's /metrics has no %s", name)
	}
	return sum
}

// rssWatch samples a process's resident set size (VmRSS) every 200 ms from its start and
// keeps the largest: the peak during the run, not over the process's life (VmHWM counts
// the image build at paddock dev's start, which holds the initramfs in memory).
type rssWatch struct {
	pid  int
	mu   sync.Mutex
	max  int64
	quit chan struct{}
	once sync.Once
}

func watchRSS(pid int) *rssWatch {
	w := &rssWatch{pid: pid, quit: make(chan struct{})}
	go func() {
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			w.sample()
			select {
			case <-w.quit:
				return
			case <-tk.C:
			}
		}
	}()
	return w
}

func (w *rssWatch) sample() {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", w.pid))
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			w.mu.Lock()
			w.max = max(w.max, kb<<10)
			w.mu.Unlock()
		}
	}
}

func (w *rssWatch) peak() int64 {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.max
}

func (w *rssWatch) stop() { w.once.Do(func() { close(w.quit) }) }
