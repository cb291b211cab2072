package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// PortName is the name of the agent's virtio-serial port.
const PortName = "org.paddock.agent.0"

// ErrClosed is returned by Dial and Accept after Close or once the underlying
// stream has ended for good.
var ErrClosed = errors.New("transport closed")

// Guest is the agent's end of the stream (a virtio-serial port, or one TCP
// connection). It runs one session at a time; Dial starts the next.
type Guest struct {
	rw   io.ReadWriteCloser
	out  *framer
	opts Options
	log  *slog.Logger
	done chan struct{} // closed when the reader stops

	// mu guards the fields below.
	mu      sync.Mutex
	cur     *Conn
	dialing uint64
	acked   chan *Conn    // receives the session when dialing is ACKed (cap 1)
	resync  chan struct{} // signalled on RESYNC
	err     error         // why the reader stopped
	closed  bool
}

// NewGuest starts reading rw. Close the Guest to close rw.
func NewGuest(rw io.ReadWriteCloser, opts Options) *Guest {
	opts = opts.withDefaults()
	g := &Guest{rw: rw, out: &framer{w: rw}, opts: opts, log: opts.Logger, done: make(chan struct{}), resync: make(chan struct{}, 1)}
	go g.read()
	return g
}

// FindPort returns the /dev path of the virtio-serial port with the given name,
// looking it up in /sys/class/virtio-ports/*/name.
func FindPort(name string) (string, error) {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q in /sys/class/virtio-ports (is virtio_console loaded and the channel defined in the domain?)", name)
}

// OpenPort waits (until ctx is done) for the virtio-serial port named name,
// opens it and returns a Guest on it with EOFIsTransient set.
func OpenPort(ctx context.Context, name string, opts Options) (*Guest, error) {
	for {
		path, err := FindPort(name)
		if err == nil {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return nil, fmt.Errorf("opening virtio-serial port %s (%s): %w", name, path, err)
			}
			opts.EOFIsTransient = true
			if opts.Name == "" {
				opts.Name = name
			}
			return NewGuest(f, opts), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for virtio-serial port: %w (%v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// DialTCP connects to a host or server at addr over TCP and starts a session;
// closing the session closes the TCP connection.
func DialTCP(ctx context.Context, addr string, opts Options) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	g := NewGuest(c, opts)
	s, err := g.Dial(ctx)
	if err != nil {
		g.Close()
		return nil, err
	}
	s.(*Conn).onClose = func(*Conn) { g.Close() }
	return s, nil
}

func newSessionID() uint64 {
	for {
		var b [8]byte
		sessionRandom(b[:])
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// Dial ends the current session (if any) and starts a new one: it sends HELLO
// with a fresh session id until the host ACKs it, or ctx is done. Use it as
// gRPC's dialer: grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return g.Dial(ctx) }).
func (g *Guest) Dial(ctx context.Context) (net.Conn, error) {
	sid := newSessionID()
	acked := make(chan *Conn, 1)
	g.mu.Lock()
	if g.closed || g.err != nil {
		err := g.err
		g.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrClosed, err)
	}
	old := g.cur
	g.cur, g.dialing, g.acked = nil, sid, acked
	g.mu.Unlock()
	if old != nil {
		old.end(fmt.Errorf("%w: replaced by a new session", ErrSessionEnded))
	}
	// Writes block while no host is attached to a virtio port: send from a
	// goroutine, one at a time, so ctx still bounds Dial.
	sending := make(chan struct{}, 1)
	send := func(first bool) {
		select {
		case sending <- struct{}{}:
		default:
			return // the previous HELLO is still being written
		}
		go func() {
			defer func() { <-sending }()
			if first {
				_ = g.out.writeRaw(padding)
			}
			stillDialing := func() bool {
				g.mu.Lock()
				defer g.mu.Unlock()
				return g.dialing == sid
			}
			if err := g.out.writeIf(stillDialing, frame{typ: frameHello, session: sid, payload: []byte(g.opts.Name)}); err != nil {
				g.log.Debug("transport: sending HELLO", "err", err)
			}
		}()
	}
	send(true)
	t := time.NewTicker(g.opts.HelloInterval)
	defer t.Stop()
	for {
		select {
		case c := <-acked:
			g.log.Debug("transport: session established", "session", fmt.Sprintf("%016x", sid))
			return c, nil
		case <-g.resync:
			send(false)
		case <-t.C:
			send(false)
		case <-g.done:
			return nil, fmt.Errorf("%w: %v", ErrClosed, g.readErr())
		case <-ctx.Done():
			g.mu.Lock()
			if g.dialing == sid {
				g.dialing = 0
			}
			g.mu.Unlock()
			return nil, fmt.Errorf("waiting for the host to accept session: %w", ctx.Err())
		}
	}
}

func (g *Guest) forget(c *Conn) {
	g.mu.Lock()
	if g.cur == c {
		g.cur = nil
	}
	g.mu.Unlock()
}

func (g *Guest) readErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// Close ends the session and closes the underlying stream.
func (g *Guest) Close() error {
	g.mu.Lock()
	g.closed = true
	cur := g.cur
	g.mu.Unlock()
	if cur != nil {
		cur.Close()
	}
	return g.rw.Close()
}

func (g *Guest) endCurrent(why string) {
	g.mu.Lock()
	cur := g.cur
	g.cur = nil
	g.mu.Unlock()
	if cur != nil {
		g.log.Info("transport: session ended", "session", fmt.Sprintf("%016x", cur.session), "why", why)
		cur.end(fmt.Errorf("%w: %s", ErrSessionEnded, why))
	}
}

func (g *Guest) read() {
	fr := newFrameReader(g.rw)
	var skipped int64
	for {
		f, err := fr.next()
		if err != nil {
			g.mu.Lock()
			closed := g.closed
			g.mu.Unlock()
			if errors.Is(err, io.EOF) && g.opts.EOFIsTransient && !closed {
				g.endCurrent("host disconnected")
				time.Sleep(100 * time.Millisecond)
				continue
			}
			g.mu.Lock()
			g.err = err
			g.mu.Unlock()
			g.endCurrent("stream ended: " + err.Error())
			close(g.done)
			return
		}
		if fr.skipped != skipped {
			g.endCurrent(fmt.Sprintf("%d bytes of garbage in the stream", fr.skipped-skipped))
			skipped = fr.skipped
		}
		g.mu.Lock()
		cur, dialing, acked := g.cur, g.dialing, g.acked
		g.mu.Unlock()
		switch f.typ {
		case frameAck:
			if f.session == dialing && dialing != 0 {
				// Install the session before reading on: the host's first
				// DATA frame may follow the ACK at once.
				c := newConn(f.session, g.out, g.opts.Name, "host", g.forget, g.opts)
				g.mu.Lock()
				g.dialing, g.cur = 0, c
				g.mu.Unlock()
				acked <- c
			}
		case frameData:
			if cur != nil && f.session == cur.session && !cur.deliver(f) {
				g.endCurrent("sequence gap")
			}
		case frameClose:
			if cur != nil && f.session == cur.session {
				g.forget(cur)
				cur.end(io.EOF)
			}
		case frameResync:
			g.endCurrent("host reconnected")
			select {
			case g.resync <- struct{}{}:
			default:
			}
		}
	}
}
