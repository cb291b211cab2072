package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Options tune either end. Zero values take defaults.
type Options struct {
	// Name labels this end in HELLO frames and addresses (e.g. the VM name).
	Name string
	// HelloInterval is how often a dialing guest re-sends HELLO. Default 500ms.
	HelloInterval time.Duration
	// EOFIsTransient: an EOF from the underlying stream means "no peer right
	// now" (a virtio-serial port with no host attached), not the end: keep
	// reading. The current session ends. Set by OpenPort.
	EOFIsTransient bool
	// Window bounds the bytes a session buffers that its reader has not read yet.
	// When the peer sends more, the stream is not read on (backpressure: a TCP
	// peer's or a guest's writes block) until the reader catches up. Default
	// DefaultWindow.
	Window int
	// StallTimeout: a session whose window stays full this long (its reader does
	// not read, e.g. a session nobody accepted) is cut off. Default 60s.
	StallTimeout time.Duration
	// HandshakeTimeout: a connection served by a Listener that has not started a
	// session within this long is closed. Default 30s (Listener only).
	HandshakeTimeout time.Duration
	// MaxSessions bounds the sessions one connection may start over its life; the
	// connection is closed at the next HELLO past it. Default 64 (Host only).
	MaxSessions int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultWindow is the default Options.Window: 4 MiB.
const DefaultWindow = 4 << 20

func (o Options) withDefaults() Options {
	if o.HelloInterval == 0 {
		o.HelloInterval = 500 * time.Millisecond
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 30 * time.Second
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Addr is the address of a session end.
type Addr struct {
	Name    string
	Session uint64
}

// Network returns "paddock".
func (a Addr) Network() string { return "paddock" }

func (a Addr) String() string { return fmt.Sprintf("%s/session-%016x", a.Name, a.Session) }

// ErrSessionEnded is wrapped by read errors of a session that ended for a
// reason other than a clean close by the peer.
var ErrSessionEnded = errors.New("transport session ended")

// framer writes frames onto the shared stream.
type framer struct {
	mu sync.Mutex // guards writes to w and the buffer
	w  io.Writer
	b  []byte
}

func (f *framer) write(fr frame) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.b = appendFrame(f.b[:0], fr)
	_, err := f.w.Write(f.b)
	return err
}

// writeIf writes fr only if ok() still holds once the stream is ours.
func (f *framer) writeIf(ok func() bool, fr frame) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !ok() {
		return nil
	}
	f.b = appendFrame(f.b[:0], fr)
	_, err := f.w.Write(f.b)
	return err
}

func (f *framer) writeRaw(b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.w.Write(b)
	return err
}

// Conn is one session; it implements net.Conn.
type Conn struct {
	session uint64
	out     *framer
	local   Addr
	remote  Addr
	onClose func(*Conn)

	wmu     sync.Mutex // serialises Write (keeps seq in order)
	sendSeq uint32

	window  int           // bound on buf (Options.Window)
	stall   time.Duration // how long deliver waits for room (Options.StallTimeout)
	drained chan struct{} // signalled when Read takes bytes from buf, or the session ends

	// mu guards the fields below.
	mu        sync.Mutex
	buf       bytes.Buffer
	recvSeq   uint32
	rerr      error // returned by Read once buf is empty
	closed    bool
	rdeadline time.Time
	wdeadline time.Time
	notify    chan struct{} // signalled when buf, rerr or rdeadline change
}

var _ net.Conn = (*Conn)(nil)

func newConn(session uint64, out *framer, local, remote string, onClose func(*Conn), o Options) *Conn {
	return &Conn{
		session: session, out: out, onClose: onClose, notify: make(chan struct{}, 1), drained: make(chan struct{}, 1),
		window: o.Window, stall: o.StallTimeout,
		local: Addr{Name: local, Session: session}, remote: Addr{Name: remote, Session: session},
	}
}

func (c *Conn) signalDrained() {
	select {
	case c.drained <- struct{}{}:
	default:
	}
}

// Session returns the session id.
func (c *Conn) Session() uint64 { return c.session }

func (c *Conn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// ErrWindowExceeded is wrapped by the read error of a session cut off because its
// peer kept its window full for Options.StallTimeout while nothing read it.
var ErrWindowExceeded = errors.New("transport window full while the reader stalled")

// deliver hands a DATA frame to the session; false means the session was ended (a
// sequence gap, or its window stayed full past the stall timeout). While the
// session's unread bytes would pass its window, deliver waits for the reader: the
// caller (the stream's only reader) stops reading the stream meanwhile, which is
// the backpressure that bounds memory whatever the peer sends.
func (c *Conn) deliver(f frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rerr != nil || c.closed {
		return true
	}
	if f.seq != c.recvSeq {
		c.rerr = fmt.Errorf("%w: frame %d arrived where %d was expected (bytes lost)", ErrSessionEnded, f.seq, c.recvSeq)
		c.signal()
		return false
	}
	c.recvSeq++
	var deadline *time.Timer
	for c.window > 0 && c.buf.Len() > 0 && c.buf.Len()+len(f.payload) > c.window {
		if deadline == nil {
			deadline = time.NewTimer(c.stall)
			defer deadline.Stop()
		}
		c.mu.Unlock()
		select {
		case <-c.drained:
			c.mu.Lock()
		case <-deadline.C:
			c.mu.Lock()
			if c.rerr == nil {
				c.rerr = fmt.Errorf("%w: %w: %d bytes unread for %v", ErrSessionEnded, ErrWindowExceeded, c.buf.Len(), c.stall)
			}
			c.buf = bytes.Buffer{}
			c.signal()
			return false
		}
		if c.rerr != nil || c.closed {
			return true
		}
	}
	c.buf.Write(f.payload)
	c.signal()
	return true
}

// end ends the session from the stream's side: reads drain the buffer, then
// return err.
func (c *Conn) end(err error) {
	c.mu.Lock()
	if c.rerr == nil {
		c.rerr = err
	}
	c.mu.Unlock()
	c.signal()
	c.signalDrained()
}

func (c *Conn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.buf.Len() > 0 {
			n, _ := c.buf.Read(p)
			if c.buf.Len() == 0 {
				c.buf.Reset()
			}
			c.mu.Unlock()
			c.signalDrained()
			return n, nil
		}
		if c.rerr != nil {
			err := c.rerr
			c.mu.Unlock()
			return 0, err
		}
		dl := c.rdeadline
		c.mu.Unlock()
		var timer <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			timer = t.C
			defer t.Stop()
		}
		select {
		case <-c.notify:
		case <-timer:
		}
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		c.mu.Lock()
		closed, ended, dl := c.closed, c.rerr, c.wdeadline
		c.mu.Unlock()
		switch {
		case closed:
			return n, net.ErrClosed
		case ended != nil:
			return n, ended
		case !dl.IsZero() && time.Now().After(dl):
			return n, os.ErrDeadlineExceeded
		}
		chunk := p[:min(len(p), MaxPayload)]
		if err := c.out.write(frame{typ: frameData, session: c.session, seq: c.sendSeq, payload: chunk}); err != nil {
			c.end(fmt.Errorf("%w: writing: %v", ErrSessionEnded, err))
			return n, err
		}
		c.sendSeq++
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Close ends the session and tells the peer (best effort, without blocking).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ended := c.rerr != nil
	c.buf = bytes.Buffer{}
	c.mu.Unlock()
	c.signal()
	c.signalDrained()
	if !ended {
		go c.out.write(frame{typ: frameClose, session: c.session})
	}
	if c.onClose != nil {
		c.onClose(c)
	}
	return nil
}

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.rdeadline = t
	c.mu.Unlock()
	c.signal()
	return nil
}

// SetWriteDeadline is checked before each frame is written; a write already
// blocked on the underlying stream is not interrupted.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdeadline = t
	c.mu.Unlock()
	return nil
}
