package runner

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// slowConn is a connection whose first read waits delay: the handler's side of the
// TLS handshake answering late, as in a guest starved of CPU.
type slowConn struct {
	net.Conn
	delay  time.Duration
	once   sync.Once
	closed chan struct{}
	shut   sync.Once
}

func (c *slowConn) Read(b []byte) (int, error) {
	c.once.Do(func() {
		select {
		case <-time.After(c.delay):
		case <-c.closed:
		}
	})
	return c.Conn.Read(b)
}

func (c *slowConn) Close() error {
	c.shut.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// plainHandlerConfig is the test binary started as the fake handler "plain" (a
// go-plugin handler), with dial as the runner's dialer.
func plainHandlerConfig(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error)) pluginConfig {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "PADDOCK_RUNNER_TEST_FAKE_HANDLER=plain")
	return pluginConfig{cmd: cmd, sum: h.Sum(nil), timeout: 2 * time.Minute, dial: dial,
		stderr: func(line string) { t.Log("handler:", line) }, stdout: io.Discard, errout: io.Discard}
}

// TestSlowTLSHandshakeIsWaitedFor: a handler whose side of the TLS handshake answers
// 25 s late (past gRPC's own 20 s for a connection attempt; a starved guest took that
// long) is described, not refused with "authentication handshake failed: context
// deadline exceeded". The 40-guest burst of 2026-12-02 lost 6 tasks to that.
func TestSlowTLSHandshakeIsWaitedFor(t *testing.T) {
	var dials int
	var mu sync.Mutex
	cfg := plainHandlerConfig(t, func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		dials++
		if dials > 1 {
			return c, nil
		}
		return &slowConn{Conn: c, delay: 25 * time.Second, closed: make(chan struct{})}, nil
	})
	c, err := startPlugin(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	desc, err := c.describe(handlerpb.NewHandlerClient(c.conn))
	if err != nil {
		t.Fatalf("describing a handler whose TLS handshake answered 25 s late: %v", err)
	}
	if len(desc.GetTypes()) != 1 {
		t.Fatalf("Describe answered %v", desc)
	}
}

// TestExitInStartEndsDescribe: describe waits for the connection (WaitForReady), but a
// handler that exits after its handshake line ends the wait at once, with an error
// that says so, not after its start's deadline.
func TestExitInStartEndsDescribe(t *testing.T) {
	var cmd *exec.Cmd
	cfg := plainHandlerConfig(t, func(ctx context.Context, network, addr string) (net.Conn, error) {
		_ = cmd.Process.Kill()
		return nil, errors.New("refused by the test")
	})
	cmd = cfg.cmd
	c, err := startPlugin(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	_, err = c.describe(handlerpb.NewHandlerClient(c.conn))
	if !errors.Is(err, errExitedInStart) {
		t.Fatalf("describing a handler that exited after its handshake line: %v, want %v", err, errExitedInStart)
	}
	t.Logf("error: %v", err)
}
