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
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.HelloInterval == 0 {
		o.HelloInterval = 500 * time.Millisecond
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

func newConn(session uint64, out *framer, local, remote string, onClose func(*Conn)) *Conn {
	return &Conn{
		session: session, out: out, onClose: onClose, notify: make(chan struct{}, 1),
		local: Addr{Name: local, Session: session}, remote: Addr{Name: remote, Session: session},
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

// deliver hands a DATA frame to the session; false means a sequence gap (the
// session is then ended).
func (c *Conn) deliver(f frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rerr != nil {
		return true
	}
	if f.seq != c.recvSeq {
		c.rerr = fmt.Errorf("%w: frame %d arrived where %d was expected (bytes lost)", ErrSessionEnded, f.seq, c.recvSeq)
		c.signal()
		return false
	}
	c.recvSeq++
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
			c.mu.Unlock()
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
	c.mu.Unlock()
	c.signal()
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
