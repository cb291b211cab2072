package vmpool

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSocketConnectorHandsOverAfterReadyLine: the connector retries until the socket
// exists, skips lines before the ready line, and returns the connection positioned just
// after it, so the relay sees every later byte (e.g. the transport's HELLO frames).
func TestSocketConnectorHandsOverAfterReadyLine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		conn net.Conn
		info ReadyInfo
		err  error
	}
	res := make(chan result, 1)
	go func() {
		c, info, err := SocketConnector{RetryEvery: 5 * time.Millisecond}.WaitReady(ctx, GuestRef{Name: "g", Socket: sock})
		res <- result{c, info, err}
	}()
	time.Sleep(30 * time.Millisecond) // the socket does not exist yet: the connector retries
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := io.WriteString(srv, "stale bytes\nPADDOCK-AGENT READY version=v9 boot_ms=1234\nHELLO-FRAME-BYTES"); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.conn.Close()
	if r.info.AgentVersion != "v9" || r.info.BootMS != 1234 {
		t.Fatalf("ReadyInfo = %+v", r.info)
	}
	buf := make([]byte, len("HELLO-FRAME-BYTES"))
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r.conn, buf); err != nil || string(buf) != "HELLO-FRAME-BYTES" {
		t.Fatalf("after the ready line the relay reads %q (%v), want the bytes that followed it", buf, err)
	}
}

func TestSocketConnectorErrors(t *testing.T) {
	dir := t.TempDir()
	t.Run("no socket before the deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, _, err := SocketConnector{}.WaitReady(ctx, GuestRef{Name: "g", Socket: filepath.Join(dir, "none.sock")})
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "none.sock") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("guest closes before its ready line", func(t *testing.T) {
		sock := filepath.Join(dir, "eof.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err == nil {
				io.WriteString(c, "kernel panic")
				c.Close()
			}
		}()
		_, _, err = SocketConnector{}.WaitReady(context.Background(), GuestRef{Name: "g", Socket: sock})
		if !errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "kernel panic") {
			t.Fatalf("err = %v, want EOF quoting what was read", err)
		}
	})
	t.Run("silent guest until the deadline", func(t *testing.T) {
		sock := filepath.Join(dir, "silent.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err == nil {
				time.Sleep(time.Second)
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err = SocketConnector{}.WaitReady(ctx, GuestRef{Name: "g", Socket: sock})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 900*time.Millisecond {
			t.Fatalf("err = %v after %v, want the deadline at once", err, time.Since(start))
		}
	})
}

func TestDrainRelay(t *testing.T) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- DrainRelay{}.Serve(context.Background(), GuestRef{Name: "g"}, a) }()
	io.WriteString(b, "anything")
	b.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve at EOF = %v, want nil", err)
	}
	a, b = net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- DrainRelay{}.Serve(ctx, GuestRef{Name: "g"}, a) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after cancel = %v, want context.Canceled", err)
	}
}

func TestCounts(t *testing.T) {
	var c Counts
	c.Set("a", 3)
	c.Set("b", -1)
	if c.Backlog("a") != 3 || c.Backlog("b") != 0 || c.Backlog("c") != 0 {
		t.Fatalf("Counts = %v", c.m)
	}
	c.Replace(map[string]int{"c": 2})
	if c.Backlog("a") != 0 || c.Backlog("c") != 2 {
		t.Fatalf("after Replace: %v", c.m)
	}
}
