package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/demo"
	"github.com/paddockvm/paddock/internal/testutil"
)

const (
	examples = "../../examples/demo"
	// idleWindow is how long BenchmarkIdleGuest measures idle CPU.
	idleWindow = 60 * time.Second
)

// readyWait bounds `paddock dev` start → "ready" (image build and two TCG boots on a
// busy 2-core machine); BenchmarkIdleGuest scales it with its guests.
var readyWait = 6 * time.Minute

// demoHandlers are the handlers the demo scenario needs.
var demoHandlers = []string{"checksum", "logscan", "score", "compress", "testhandler"}

// bins are the binaries the tests run, built once (testutil.BinSet).
var bins = &testutil.BinSet{Prefix: "paddock-e2e-bin-", Bins: testutil.PaddockBins(demoHandlers...)}

func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// binaries returns the directory of paddock, paddock-agent and the demo's handlers,
// laid out as `make build` does (<dir>/paddock, <dir>/paddock-agent, <dir>/handlers/*).
func binaries(t testing.TB) string { return bins.Dir(t) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dataDir returns a 0755 temporary directory (QEMU must reach the image store in it),
// removed at cleanup.
func dataDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "paddock-e2e-data-")
	if err == nil {
		err = os.Chmod(d, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Join(d, "dev")
}

// guestsWithPrefix lists the libvirt domains (running or not) whose names start with
// prefix.
func guestsWithPrefix(t testing.TB, uri, prefix string) []string {
	t.Helper()
	out, err := exec.Command("virsh", "-c", uri, "list", "--all", "--name").CombinedOutput()
	if err != nil {
		t.Fatalf("virsh list: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Fields(string(out)) {
		if strings.HasPrefix(l, prefix) {
			names = append(names, l)
		}
	}
	return names
}

// guestEnv is one test's guest namespace: a libvirt URI and a domain-name prefix no
// other test uses. Its cleanup destroys every domain with the prefix.
type guestEnv struct {
	uri, prefix string
}

func newGuestEnv(t testing.TB) guestEnv {
	t.Helper()
	uri := testutil.RequireLibvirt(t)
	testutil.RequireKernel(t)
	g := guestEnv{uri: uri, prefix: "paddock-e2e" + randHex(3) + "-"}
	t.Cleanup(func() {
		for _, n := range guestsWithPrefix(t, g.uri, g.prefix) {
			t.Errorf("guest %s outlived the test: destroying it", n)
			_ = exec.Command("virsh", "-c", g.uri, "destroy", n).Run()
			_ = exec.Command("virsh", "-c", g.uri, "undefine", n).Run()
		}
	})
	return g
}

// devProc is one running `paddock dev`.
type devProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	dataDir string
	done    chan struct{}
	err     error // of Wait, once done is closed

	stdoutR *os.File // the read end of paddock dev's stdout (closeStdout)

	mu     sync.Mutex
	stdout bytes.Buffer
	lines  chan string
	stderr bytes.Buffer

	api, token string
}

var apiRE = regexp.MustCompile(`client API\s+(http://\S+)`)

// startDev starts `paddock dev` on free ports with the given data directory and
// waits until it says it is ready. At cleanup it is stopped (SIGINT, then SIGKILL).
func startDev(t testing.TB, g guestEnv, bin, dir string, extra ...string) *devProc {
	t.Helper()
	args := append([]string{"dev", "--data-dir", dir, "--libvirt-uri", g.uri, "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0",
		"--cluster-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--memory", "256"}, extra...)
	p := &devProc{t: t, dataDir: dir, done: make(chan struct{}), lines: make(chan string, 1000)}
	p.cmd = exec.Command(filepath.Join(bin, "paddock"), args...)
	p.cmd.Env = append(os.Environ(), "PADDOCK_HYPERVISOR_PREFIX="+g.prefix, "PADDOCK_HYPERVISOR_ACCEL=auto")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	pr, pw, err := os.Pipe() // a real pipe: closing its read end gives the writer EPIPE/SIGPIPE
	if err != nil {
		t.Fatal(err)
	}
	p.stdoutR = pr
	p.cmd.Stdout = pw
	err = p.cmd.Start()
	pw.Close()
	if err != nil {
		t.Fatalf("starting paddock dev: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.stdout.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("paddock dev stdout:\n%s\nstderr:\n%s", p.output(), p.errput())
			if b, err := os.ReadFile(filepath.Join(dir, "dev.log")); err == nil {
				t.Logf("dev.log (last 60 lines):\n%s", tail(string(b), 60))
			}
		}
	})
	p.waitReady()
	tok, err := os.ReadFile(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatalf("reading the dev token: %v", err)
	}
	p.token = strings.TrimSpace(string(tok))
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *devProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

func (p *devProc) errput() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// waitReady reads progress lines until "ready in", logging each.
func (p *devProc) waitReady() {
	p.t.Helper()
	deadline := time.After(readyWait)
	for {
		select {
		case l := <-p.lines:
			p.t.Logf("dev: %s", l)
			if m := apiRE.FindStringSubmatch(l); m != nil {
				p.api = m[1]
			}
			if strings.Contains(l, "paddock dev: ready in") {
				if p.api == "" {
					p.t.Fatal("paddock dev said it was ready but never printed its client API address")
				}
				return
			}
		case <-p.done:
			p.t.Fatalf("paddock dev exited before it was ready (%v)", p.err)
		case <-deadline:
			p.t.Fatalf("paddock dev not ready after %v", readyWait)
		}
	}
}

// stop sends SIGINT and waits (2 minutes, then SIGKILL of the group); it reports
// whether the process stopped by itself.
func (p *devProc) stop() bool {
	select {
	case <-p.done:
		return p.err == nil
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
		return p.err == nil
	case <-time.After(2 * time.Minute):
		p.t.Errorf("paddock dev did not stop within 2m of SIGINT: killing it")
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return false
	}
}

// closeStdout closes the read end of paddock dev's stdout, as when the program reading
// its progress goes away: its next write meets a broken pipe.
func (p *devProc) closeStdout() { p.stdoutR.Close() }

func (p *devProc) kill9() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// cli runs the paddock CLI against the dev server.
func (p *devProc) cli(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "paddock"), args...)
	cmd.Env = append(os.Environ(), "PADDOCK_CLIENT_SERVER="+p.api, "PADDOCK_CLIENT_TOKEN="+p.token)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// TestDevDemo runs the demo scenario against `paddock dev` with real guests and checks
// every printed result; then Ctrl-C removes the guests.
func TestDevDemo(t *testing.T) {
	g := newGuestEnv(t)
	bin := binaries(t)
	dir := dataDir(t)
	start := time.Now()
	p := startDev(t, g, bin, dir, "--handlers-dir", filepath.Join(bin, "handlers"))
	t.Logf("paddock dev ready after %s", time.Since(start).Round(100*time.Millisecond))
	if n := len(guestsWithPrefix(t, g.uri, g.prefix)); n < 2 {
		t.Fatalf("paddock dev is ready with %d guests in libvirt, want at least the 2 warm ones", n)
	}

	// A wrong token is refused: the dev server really checks it.
	if out, err := (&devProc{api: p.api, token: "wrong"}).cli(bin, "task", "ls"); err == nil || !strings.Contains(out, "wrong bearer token") {
		t.Errorf("paddock task ls with a wrong token: err %v, output %q; want a refusal", err, out)
	}

	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sum, err := demo.Run(ctx, demo.Config{Server: p.api, Token: p.token, Paddock: filepath.Join(bin, "paddock"), Examples: examples,
		AgentWait: 2 * time.Minute, TaskWait: 6 * time.Minute, Out: &out})
	t.Logf("demo output:\n%s", out.String())
	if err != nil {
		t.Fatalf("demo.Run: %v", err)
	}
	if err := demo.Check(out.String()); err != nil {
		t.Fatal(err)
	}
	if got := len(sum.Tasks["retry"].GetAttempts()); got != 2 {
		t.Errorf("the retried task has %d attempts, want 2", got)
	}
	// Every task ran in one of this paddock dev's guests.
	for name, task := range sum.Tasks {
		if a := task.GetAgentId(); !strings.HasPrefix(a, g.prefix+"dev-") {
			t.Errorf("task %s ran on agent %q, not on a guest of the dev pool (%sdev-…)", name, a, g.prefix)
		}
	}

	if !p.stop() {
		t.Fatalf("paddock dev exited with %v after SIGINT", p.err)
	}
	if !strings.Contains(p.output(), "stopped; guests removed") {
		t.Errorf("paddock dev did not say it removed its guests:\n%s", tail(p.output(), 5))
	}
	if left := guestsWithPrefix(t, g.uri, g.prefix); len(left) > 0 {
		t.Errorf("guests left after paddock dev stopped: %v", left)
	}
	if hid, err := os.ReadFile(filepath.Join(dir, "dev-host-id")); err == nil {
		if _, err := os.Stat(filepath.Join("/run/paddock", strings.TrimSpace(string(hid)))); !os.IsNotExist(err) {
			t.Errorf("the run directory /run/paddock/%s outlived paddock dev (stat: %v)", strings.TrimSpace(string(hid)), err)
		}
	}
}

// TestDevCrashRestart: kill -9 leaves the guests; the next paddock dev on the same data
// directory destroys them and works.
func TestDevCrashRestart(t *testing.T) {
	g := newGuestEnv(t)
	bin := binaries(t)
	dir := dataDir(t)
	first := startDev(t, g, bin, dir, "--max-guests", "2")
	before := guestsWithPrefix(t, g.uri, g.prefix)
	if len(before) < 2 {
		t.Fatalf("first run: %d guests in libvirt, want 2", len(before))
	}
	first.kill9()
	if still := guestsWithPrefix(t, g.uri, g.prefix); len(still) == 0 {
		t.Fatal("no guest survived kill -9: this test could not tell cleanup from nothing")
	}
	t.Logf("killed paddock dev with SIGKILL; its guests %v are still defined", before)

	second := startDev(t, g, bin, dir, "--max-guests", "2")
	now := guestsWithPrefix(t, g.uri, g.prefix)
	for _, old := range before {
		for _, n := range now {
			if n == old {
				t.Errorf("guest %s of the killed run is still there after the second run started", old)
			}
		}
	}
	if !strings.Contains(second.errput()+readLog(dir), "destroyed a guest left by a previous run") {
		t.Errorf("the second run did not log destroying the first run's guests")
	}
	f := filepath.Join(t.TempDir(), "hello.txt")
	if err := os.WriteFile(f, []byte("hello, paddock\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := second.cli(bin, "task", "submit", "--type", "checksum", "--input", "hello.txt="+f, "--wait")
	if err != nil || !strings.Contains(out, "succeeded") {
		t.Fatalf("a checksum task on the second run: err %v\n%s", err, out)
	}
	t.Logf("task on the second run:\n%s", out)
	if !second.stop() {
		t.Fatalf("second paddock dev exited with %v after SIGINT", second.err)
	}
	if left := guestsWithPrefix(t, g.uri, g.prefix); len(left) > 0 {
		t.Errorf("guests left after the second paddock dev stopped: %v", left)
	}
}

// TestDevStopsWithoutReader: paddock dev removes its guests when it is stopped after
// the reader of its stdout has gone (its "stopping" line meets a broken pipe: SIGPIPE
// killed it half way before) and when a second SIGINT comes before it has finished
// stopping (it exited at once before, leaving the guests).
func TestDevStopsWithoutReader(t *testing.T) {
	g := newGuestEnv(t)
	bin := binaries(t)
	p := startDev(t, g, bin, dataDir(t), "--guests", "1", "--max-guests", "1")
	if n := len(guestsWithPrefix(t, g.uri, g.prefix)); n < 1 {
		t.Fatalf("paddock dev is ready with %d guests in libvirt, want 1: the test could not tell cleanup from nothing", n)
	}
	p.closeStdout()
	_ = p.cmd.Process.Signal(os.Interrupt)
	time.Sleep(200 * time.Millisecond)
	_ = p.cmd.Process.Signal(os.Interrupt) // a second Ctrl-C while stopping
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("paddock dev did not exit within 2m of two SIGINTs")
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Errorf("paddock dev was killed by %v (want it to clean up and exit)", ws.Signal())
		}
	}
	if left := guestsWithPrefix(t, g.uri, g.prefix); len(left) > 0 {
		t.Errorf("guests left after paddock dev stopped with no stdout reader and two SIGINTs: %v\nstderr:\n%s", left, tail(p.errput(), 20))
	}
}

func readLog(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "dev.log"))
	return string(b)
}

// TestDevBadInput: each bad start ends at once with a message naming the fix.
func TestDevBadInput(t *testing.T) {
	bin := binaries(t)
	base := filepath.Dir(dataDir(t)) // searchable by others, as paddock dev checks
	empty := filepath.Join(base, "empty")
	fakeKernel := filepath.Join(base, "vmlinuz-fake")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fakeKernel, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// The lock of a data directory held by another process (a running paddock dev).
	busy := filepath.Join(base, "busy")
	if err := os.MkdirAll(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("flock", filepath.Join(busy, "dev.lock"), "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Skipf("flock(1) not available: %v", err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	waitLocked(t, filepath.Join(busy, "dev.lock"))

	free := []string{"--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no kernel", append([]string{"--kernel", empty}, free...),
			[]string{"no kernel image", "no vmlinuz-* in " + empty, "make setup", "--kernel"}},
		{"kernel file missing", append([]string{"--kernel", filepath.Join(empty, "vmlinuz-none")}, free...),
			[]string{"--kernel " + filepath.Join(empty, "vmlinuz-none"), "make setup"}},
		{"libvirt down", append([]string{"--kernel", fakeKernel, "--libvirt-uri", "qemu:///system?socket=" + filepath.Join(base, "no-libvirt.sock")}, free...),
			[]string{"libvirt is not reachable", "no-libvirt.sock", "make setup", "--libvirt-uri"}},
		{"API port taken", []string{"--kernel", fakeKernel, "--listen", taken.Addr().String(), "--agent-listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"},
			[]string{"server.listen " + taken.Addr().String() + " is already in use", "--listen"}},
		{"cluster port taken", []string{"--kernel", fakeKernel, "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--cluster-listen", taken.Addr().String(), "--metrics-listen", "127.0.0.1:0"},
			[]string{"server.cluster_listen " + taken.Addr().String() + " is already in use", "--cluster-listen"}},
		{"metrics port taken", []string{"--kernel", fakeKernel, "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0", "--metrics-listen", taken.Addr().String()},
			[]string{"host.metrics_listen " + taken.Addr().String() + " is already in use", "--metrics-listen"}},
		{"data directory in use", append([]string{"--kernel", fakeKernel}, free...),
			[]string{"another paddock dev", "is running on the data directory " + busy, "--data-dir"}},
		{"too little memory", append([]string{"--memory", "64"}, free...),
			[]string{"--memory 64", "at least 128 MiB"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-"))
			if tc.name == "data directory in use" {
				dir = busy
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "paddock"), append([]string{"dev", "--data-dir", dir}, tc.args...)...)
			cmd.Env = append(os.Environ(), "PADDOCK_HYPERVISOR_PREFIX=paddock-e2ebad-")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("paddock dev did not fail within a minute; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
			}
			if err == nil {
				t.Fatalf("paddock dev succeeded; stdout:\n%s", stdout.String())
			}
			msg := stderr.String()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr lacks %q:\n%s", w, msg)
				}
			}
			if strings.Contains(stdout.String(), "booting") {
				t.Errorf("paddock dev booted guests before failing:\n%s", stdout.String())
			}
		})
	}
}

// waitLocked waits until path is flock-ed by someone else.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		f, err := os.Open(path)
		if err == nil {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			}
			f.Close()
			if err != nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never got locked by flock(1)", path)
}
