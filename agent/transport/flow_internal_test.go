package transport

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// rawPeer is a hostile TCP peer of a Listener that writes frames by hand.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
	buf  []byte
}

func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go io.Copy(io.Discard, c) // RESYNC, ACKs: never looked at
	return &rawPeer{t: t, conn: c}
}

func (p *rawPeer) send(f frame) error {
	p.buf = appendFrame(p.buf[:0], f)
	_, err := p.conn.Write(p.buf)
	return err
}

func heapInuse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestFloodIsBoundedByWindow: a peer that opens a session nobody reads and sends
// 256 MiB grows the listener by about its window, not by what it sends; once the
// window has stayed full for the stall timeout the session is cut off.
// Before the window existed the same flood grew the heap by more than the bytes sent.
func TestFloodIsBoundedByWindow(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(inner, Options{Name: "server", Logger: quiet, Window: 1 << 20, StallTimeout: 2 * time.Second})
	defer l.Close()
	before := heapInuse()
	p := dialRaw(t, inner.Addr().String())
	const session = 42
	if err := p.send(frame{typ: frameHello, session: session, payload: []byte("flooder")}); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, MaxPayload)
	const total = 256 << 20
	sent := 0
	p.conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
	for seq := uint32(0); sent < total; seq++ {
		if err := p.send(frame{typ: frameData, session: session, seq: seq, payload: payload}); err != nil {
			break // the listener stopped reading: backpressure
		}
		sent += len(payload)
	}
	grown := int64(heapInuse()) - int64(before)
	t.Logf("peer sent %d MiB to a session nobody reads; listener heap grew by %.1f MiB (window 1 MiB)", sent>>20, float64(grown)/(1<<20))
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d bytes for a 1 MiB window", grown)
	}
	if sent >= total {
		t.Log("the peer could send everything: the listener kept reading and discarding after the cut-off")
	}
}

// TestWindowBackpressureKeepsBytes: a slow reader loses nothing; the sender waits.
func TestWindowBackpressureKeepsBytes(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(inner, Options{Name: "server", Logger: quiet, Window: 64 << 10})
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		g, err := DialTCP(t.Context(), inner.Addr().String(), Options{Name: "agent", Logger: quiet})
		if err != nil {
			done <- err
			return
		}
		defer g.Close()
		b := make([]byte, 4<<20)
		for i := range b {
			b[i] = byte(i * 7)
		}
		_, err = g.Write(b)
		done <- err
	}()
	h, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4<<20)
	for off := 0; off < len(got); {
		time.Sleep(time.Millisecond) // a slow reader
		n, err := h.Read(got[off:min(off+256<<10, len(got))])
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	for i := range got {
		if got[i] != byte(i*7) {
			t.Fatalf("byte %d corrupted", i)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStallCutsOff: a session whose window stays full past the stall timeout ends
// with ErrWindowExceeded.
func TestStallCutsOff(t *testing.T) {
	out := &framer{w: io.Discard}
	c := newConn(1, out, "a", "b", nil, Options{Window: 32 << 10, StallTimeout: 200 * time.Millisecond})
	payload := make([]byte, MaxPayload)
	ok := true
	for seq := uint32(0); ok && seq < 10; seq++ {
		ok = c.deliver(frame{typ: frameData, session: 1, seq: seq, payload: payload})
	}
	if ok {
		t.Fatal("deliver kept accepting past the window with nobody reading")
	}
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, ErrWindowExceeded) {
		t.Fatalf("read error %v, want ErrWindowExceeded", err)
	}
}

// TestHandshakeTimeout: a connection that never says HELLO is closed.
func TestHandshakeTimeout(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(inner, Options{Name: "server", Logger: quiet, HandshakeTimeout: 200 * time.Millisecond})
	defer l.Close()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.Copy(io.Discard, c) // RESYNC, then EOF once the listener gives up
	if err != nil {
		t.Fatalf("the silent connection was not closed: %v", err)
	}
}

// TestMaxSessionsPerConnection: one connection cannot start sessions without end
// (10,000 agents once registered over one TCP connection).
func TestMaxSessionsPerConnection(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(inner, Options{Name: "server", Logger: quiet, MaxSessions: 3})
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(closed) }()
	var b []byte
	for s := uint64(1); s <= 10; s++ {
		b = appendFrame(b[:0], frame{typ: frameHello, session: s, payload: []byte("x")})
		if _, err := c.Write(b); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection was not closed after more than MaxSessions sessions")
	}
}
