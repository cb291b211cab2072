package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testutil"
)

// The systemd readiness protocol, end to end: the real paddock binary is started with
// NOTIFY_SOCKET pointing at a unixgram socket this test listens on, as systemd does
// for a Type=notify unit (deploy/systemd).

// buildPaddock builds cmd/paddock (cgo: libvirt) into a temporary directory.
func buildPaddock(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "paddock")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building paddock: %v\n%s", err, out)
	}
	return bin
}

// notifySocket listens like systemd's notify socket and returns its path and a
// channel of the messages sent to it.
func notifySocket(t *testing.T, name string) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 16)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return path, msgs
}

// daemon is a paddock process under test.
type daemon struct {
	cmd  *exec.Cmd
	logs testutil.SyncBuffer // its stdout and stderr
	done chan error
}

func (d *daemon) output() string { return d.logs.String() }

// start runs bin with args, env and NOTIFY_SOCKET=sock; the process is killed when
// the test ends.
func start(t *testing.T, bin, sock string, env []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	d.cmd.Env = append(append(os.Environ(), env...), "NOTIFY_SOCKET="+sock)
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

// expect waits for a message containing want on msgs.
func expect(t *testing.T, d *daemon, msgs <-chan string, want string) {
	t.Helper()
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(m, want) {
				return
			}
		case err := <-d.done:
			t.Fatalf("paddock exited (%v) before sending %q; output:\n%s", err, want, d.output())
		case <-timeout:
			t.Fatalf("no %q on NOTIFY_SOCKET after 3 minutes; output:\n%s", want, d.output())
		}
	}
}

// get fails the test unless GET url answers 200 at once.
func get(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s right after READY=1: %v", url, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s right after READY=1: %s", url, res.Status)
	}
}

// stop sends SIGTERM, expects STOPPING=1 and a clean exit.
func stop(t *testing.T, d *daemon, msgs <-chan string) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect(t, d, msgs, "STOPPING=1")
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("paddock exited with %v after SIGTERM; output:\n%s", err, d.output())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("paddock still running 2 minutes after SIGTERM; output:\n%s", d.output())
	}
}

// TestSystemdNotify runs paddock server and paddock host (on libvirt's test driver)
// as systemd would: each sends READY=1 once its ports answer, and STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	bin := buildPaddock(t)
	data := t.TempDir()
	client, cluster := testutil.FreeAddr(t), testutil.FreeAddr(t)

	srvSock, srvMsgs := notifySocket(t, "server.sock")
	srv := start(t, bin, srvSock, nil, "server", "--dev", "--data-dir", data, "--listen", client, "--agent-listen", "", "--cluster-listen", cluster)
	expect(t, srv, srvMsgs, "READY=1")
	get(t, "http://"+client+"/healthz")

	metrics := testutil.FreeAddr(t)
	hostSock, hostMsgs := notifySocket(t, "host.sock")
	host := start(t, bin, hostSock, []string{"PADDOCK_HOST_RUN_DIR=" + filepath.Join(data, "run"), "PADDOCK_HOST_SERVER=" + cluster}, "host", "--dev", "--data-dir", data, "--libvirt-uri", "test:///default", "--accel", "tcg",
		"--host-id", "notify-test", "--metrics-listen", metrics)
	expect(t, host, hostMsgs, "READY=1")
	get(t, "http://"+metrics+"/metrics")

	stop(t, host, hostMsgs)
	stop(t, srv, srvMsgs)
}
