package chaos

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testutil"
)

// bins are the binaries the chaos test runs, built once (testutil.BinSet).
var bins = &testutil.BinSet{Prefix: "paddock-chaos-bin-", Bins: append(testutil.PaddockBins("testhandler"),
	testutil.Bin{Out: "handlers/journalhandler", Pkg: "./internal/chaos/journalhandler"})}

func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// binaries returns the directory of paddock, paddock-agent, testhandler and
// journalhandler, laid out as `make build` does.
func binaries(t *testing.T) string { return bins.Dir(t) }

// freeAddr returns a loopback address that was free a moment ago; components keep it
// across restarts.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// component is one restartable process: the server, an agent or the host daemon.
// Every incarnation logs to <dir>/<name>.<n>.log.
type component struct {
	name string
	bin  string
	args []string
	env  []string
	dir  string

	mu   sync.Mutex
	n    int
	cmd  *exec.Cmd
	done chan struct{}
}

func (c *component) logPath(n int) string {
	return filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", c.name, n))
}

// start starts a new incarnation; the previous one must have exited.
func (c *component) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	f, err := os.Create(c.logPath(c.n))
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that a kill of the test cannot hit it and the final
	// sweep can reach what it leaves. A component kill hits the process only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", c.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	c.cmd, c.done = cmd, done
	return nil
}

// pid is the running incarnation's pid, 0 when none runs.
func (c *component) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	select {
	case <-c.done:
		return 0
	default:
		return c.cmd.Process.Pid
	}
}

// kill9 kills the running incarnation with SIGKILL (the process only: what it started
// must go by itself) and waits for it. It returns the pid killed, 0 if none ran.
func (c *component) kill9() int {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return 0
	}
	select {
	case <-done:
		return 0
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	return cmd.Process.Pid
}

// stop asks the running incarnation to stop (SIGTERM) and waits up to grace; it reports
// whether it exited by itself in time (then SIGKILL).
func (c *component) stop(grace time.Duration) bool {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return false
	}
}

// exitedEarly says whether the running incarnation exited without being killed (a
// crash), with its exit status.
func (c *component) exitedEarly() (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return false, ""
	}
	select {
	case <-c.done:
		return true, c.cmd.ProcessState.String()
	default:
		return false, ""
	}
}

// tail is the last n lines of the current incarnation's log.
func (c *component) tail(n int) string {
	c.mu.Lock()
	k := c.n
	c.mu.Unlock()
	b, _ := os.ReadFile(c.logPath(k))
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// grepLogs counts the lines of every incarnation's log that contain s.
func (c *component) grepLogs(s string) int {
	c.mu.Lock()
	k := c.n
	c.mu.Unlock()
	n := 0
	for i := 1; i <= k; i++ {
		b, _ := os.ReadFile(c.logPath(i))
		n += bytes.Count(b, []byte(s))
	}
	return n
}

// procInfo is a process as /proc shows it.
type procInfo struct {
	pid, ppid int
	exe       string
	cmdline   string
}

// processes lists the processes whose executable lies under dir (the run's binaries).
func processes(dir string) []procInfo {
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !strings.HasPrefix(exe, dir+string(filepath.Separator)) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, procInfo{pid: pid, ppid: ppid, exe: exe, cmdline: strings.ReplaceAll(strings.TrimRight(string(cl), "\x00"), "\x00", " ")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// guests lists the libvirt domains (running or not, or only running) whose names
// start with prefix.
func guests(uri, prefix string, all bool) ([]string, error) {
	args := []string{"-c", uri, "list", "--name"}
	if all {
		args = append(args, "--all")
	}
	out, err := exec.Command("virsh", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("virsh list: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Fields(string(out)) {
		if strings.HasPrefix(l, prefix) {
			names = append(names, l)
		}
	}
	return names, nil
}
