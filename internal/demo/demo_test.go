package demo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/demo"
)

const examples = "../../examples/demo"

// TestExpectedMatchesInputs recomputes, independently of the handlers, the figures in
// expected.go that follow from the input files by plain counting, and the fractions of
// the hand arithmetic — so an edited input or a slip in a comment shows up here.
func TestExpectedMatchesInputs(t *testing.T) {
	truth, err := os.ReadFile(filepath.Join(examples, "truth.csv"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(truth)
	want := fmt.Sprintf("checksum truth.csv size=%d sha256=%s crc32=%08x", len(truth), hex.EncodeToString(sum[:]), crc32.ChecksumIEEE(truth))
	if demo.Expected[0] != want {
		t.Errorf("Expected[0] = %q, the file gives %q", demo.Expected[0], want)
	}
	if len(truth) != 9+7*11+3*12 {
		t.Errorf("truth.csv is %d bytes, the comment says 9 + 7·11 + 3·12 = 122", len(truth))
	}

	// The fractions of the comments, rounded as printed.
	fracs := []struct {
		name string
		got  float64
		want string
	}{
		{"otter macro-F1 19/21", (6.0/7 + 6.0/7 + 1) / 3, "0.9048"},
		{"badger macro-F1 25/36", (3.0/4 + 2.0/3 + 2.0/3) / 3, "0.6944"},
		{"heron macro-F1 31/45", (2.0/5 + 2.0/3 + 1) / 3, "0.6889"},
	}
	for _, f := range fracs {
		if s := fmt.Sprintf("%.4f", f.got); s != f.want {
			t.Errorf("%s = %s, want %s", f.name, s, f.want)
		}
	}

	// Accuracy and macro-F1 from the CSVs by counting (a second, naive implementation).
	lab := readLabels(t, filepath.Join(examples, "truth.csv"))
	for _, team := range demo.Teams {
		pred := readLabels(t, filepath.Join(examples, "submissions", team+".csv"))
		if len(pred) != len(lab) {
			t.Fatalf("%s: %d predictions for %d truth rows", team, len(pred), len(lab))
		}
		tp, fp, fn := map[string]float64{}, map[string]float64{}, map[string]float64{}
		correct := 0
		for id, tl := range lab {
			pl, ok := pred[id]
			if !ok {
				t.Fatalf("%s: no prediction for %s", team, id)
			}
			if pl == tl {
				correct++
				tp[tl]++
			} else {
				fp[pl]++
				fn[tl]++
			}
		}
		var f1sum float64
		for _, c := range []string{"bird", "cat", "dog"} {
			if tp[c] > 0 {
				p, r := tp[c]/(tp[c]+fp[c]), tp[c]/(tp[c]+fn[c])
				f1sum += 2 * p * r / (p + r)
			}
		}
		line := fmt.Sprintf("score %s accuracy=%.4f macro_f1=%.4f rows=%d", team, float64(correct)/float64(len(lab)), f1sum/3, len(lab))
		if !contains(demo.Expected, line) {
			t.Errorf("counting gives %q, which is not in Expected", line)
		}
	}

	// Log levels by the first level word (the logscan rule), counted naively.
	log, err := os.ReadFile(filepath.Join(examples, "sample.log"))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	n := 0
	for _, l := range strings.Split(strings.TrimRight(string(log), "\n"), "\n") {
		n++
		f := strings.Fields(l)
		level := "unknown"
		if len(f) > 1 {
			switch f[1] {
			case "INFO", "DEBUG", "WARN", "ERROR", "FATAL":
				level = strings.ToLower(f[1])
			case "WARNING":
				level = "warn"
			case "ERR":
				level = "error"
			}
		}
		counts[level]++
	}
	line := fmt.Sprintf("logscan sample.log lines=%d debug=%d info=%d warn=%d error=%d fatal=%d unknown=%d",
		n, counts["debug"], counts["info"], counts["warn"], counts["error"], counts["fatal"], counts["unknown"])
	if !contains(demo.Expected, line) {
		t.Errorf("counting gives %q, which is not in Expected", line)
	}
}

func readLabels(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, r := range recs[1:] {
		out[r[0]] = r[1]
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// goodOutput is an output the way Run prints it, from the expected figures.
func goodOutput() string {
	var b strings.Builder
	b.WriteString("== Paddock demo ==\n  checksum: served by a1\n-- results, as they arrive --\n")
	for _, e := range demo.Expected {
		fmt.Fprintf(&b, "  %s   · task x, attempt 1/3 on a1, 1 ms\n", e)
	}
	b.WriteString("\n-- leaderboard (ranked by macro-F1, then accuracy) --\nRANK  TEAM    MACRO-F1  ACCURACY\n")
	for _, r := range demo.ExpectedLeaderboard {
		f := strings.Fields(r)
		fmt.Fprintf(&b, "%-4s  %-6s  %-8s  %s\n", f[0], f[1], f[2], f[3])
	}
	return b.String()
}

// TestCheck shows that Check accepts the expected output and refuses each kind of
// difference.
func TestCheck(t *testing.T) {
	good := goodOutput()
	tests := []struct {
		name    string
		out     string
		wantErr string
	}{
		{"expected output", good, ""},
		{"an incidental retry of another type is ignored",
			strings.Replace(good, "  checksum truth.csv", "  checksum attempt 1/3 failed: lease expired\n  checksum truth.csv", 1), ""},
		{"a figure off by one digit", strings.Replace(good, "macro_f1=0.9048", "macro_f1=0.9047", 1), `unexpected result`},
		{"a missing figure", strings.Replace(good, "  logscan top error 2×", "  (dropped)", 1), `missing "logscan top error 2×`},
		{"a duplicated figure", strings.Replace(good, "  score heron", "  score heron accuracy=0.7000 macro_f1=0.6889 rows=10\n  score heron", 1), "printed 2 times"},
		{"the retry out of order", swapLines(good, "test.flaky attempt 1/3", "test.flaky attempt 2 succeeded"), "out of order"},
		{"leaderboard rows swapped", swapLines(good, "2     badger", "3     heron"), "leaderboard row 2"},
		{"no leaderboard", good[:strings.Index(good, "\n-- leaderboard")], "no leaderboard"},
		{"empty output", "", "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := demo.Check(tc.out)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// swapLines swaps the first lines containing a and b.
func swapLines(s, a, b string) string {
	ls := strings.Split(s, "\n")
	ia, ib := -1, -1
	for i, l := range ls {
		if ia < 0 && strings.Contains(l, a) {
			ia = i
		}
		if ib < 0 && strings.Contains(l, b) {
			ib = i
		}
	}
	ls[ia], ls[ib] = ls[ib], ls[ia]
	return strings.Join(ls, "\n")
}

// TestScenario runs the scenario against a real `paddock server --dev` (SQLite file
// in a temporary directory) and a real paddock-agent over TCP running the real example
// handler subprocesses, and checks every printed result against the hand-checked
// figures.
func TestScenario(t *testing.T) {
	bins := buildBinaries(t)
	dir := t.TempDir()
	api, agentAddr, cluster := freeAddr(t), freeAddr(t), freeAddr(t)
	startProc(t, dir, "server", bins["paddock"], "server", "--dev", "--data-dir", filepath.Join(dir, "data"),
		"--listen", api, "--agent-listen", agentAddr, "--cluster-listen", cluster, "--log-format", "text")
	waitHealthy(t, "http://"+api)
	args := []string{"--server", agentAddr, "--id", "demo-test-agent"}
	for _, h := range []string{"checksum", "logscan", "score", "compress", "testhandler"} {
		args = append(args, "--handler", h+"="+bins[h])
	}
	startProc(t, dir, "agent", bins["paddock-agent"], args...)

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sum, err := demo.Run(ctx, demo.Config{Server: "http://" + api, Paddock: bins["paddock"], Examples: examples,
		AgentWait: time.Minute, TaskWait: 2 * time.Minute, Out: &out})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := demo.Check(out.String()); err != nil {
		t.Fatal(err)
	}
	if got := len(sum.Tasks["retry"].GetAttempts()); got != 2 {
		t.Errorf("the retried task has %d attempts, want 2", got)
	}
	if lb := sum.Leaderboard; len(lb) != 3 || lb[0].Team != "otter" || lb[1].Team != "badger" || lb[2].Team != "heron" {
		t.Errorf("leaderboard = %+v, want otter, badger, heron", lb)
	}
}

var (
	buildOnce sync.Once
	built     map[string]string
	buildErr  error
	buildDir  string
)

// buildBinaries builds paddock (cgo: it links libvirt), paddock-agent and the handlers.
func buildBinaries(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "paddock-demo-bins-")
		if buildErr != nil {
			return
		}
		built = map[string]string{}
		for name, pkg := range map[string]string{
			"paddock": "./cmd/paddock", "paddock-agent": "./cmd/paddock-agent",
			"checksum": "./plugins/handlers/checksum", "logscan": "./plugins/handlers/logscan",
			"score": "./plugins/handlers/score", "testhandler": "./plugins/handlers/testhandler",
			"compress": "./plugins/handlers/compress",
		} {
			p := filepath.Join(buildDir, name)
			cmd := exec.Command("go", "build", "-o", p, pkg)
			cmd.Dir = "../.."
			if name != "paddock" {
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			}
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s (`make setup` installs libvirt-dev for the cgo build): %v\n%s", pkg, err, b)
				return
			}
			built[name] = p
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProc starts a process in its own process group, logging to dir/name.log, and
// stops it (SIGTERM, then SIGKILL of the group) at cleanup.
func startProc(t *testing.T, dir, name, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", name, b)
		}
	})
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("server at %s not healthy after 30s", url)
}
