package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// Host is the host's (or server's) end of one connection to a guest: a
// connection to the unix socket libvirt made for the guest's virtio-serial
// port, or one accepted TCP connection. On start it sends RESYNC, then skips
// everything until a valid HELLO and ACKs it; every later HELLO with a new
// session id replaces the session.
type Host struct {
	rw   io.ReadWriteCloser
	out  *framer
	opts Options
	log  *slog.Logger
	done chan struct{}

	sessions chan *Conn // newest established session not yet Accepted (cap 1)

	// mu guards the fields below.
	mu      sync.Mutex
	cur     *Conn
	err     error
	closed  bool
	ended   []uint64 // recent session ids; a late HELLO for one is stale
	started int      // sessions started on this stream (bounded by Options.MaxSessions)
}

// NewHost starts the host half of the protocol on rw (typically a net.Conn
// from dialing libvirt's unix socket for the guest's channel). Close the Host
// to close rw.
func NewHost(rw io.ReadWriteCloser, opts Options) *Host {
	opts = opts.withDefaults()
	h := &Host{rw: rw, out: &framer{w: rw}, opts: opts, log: opts.Logger, done: make(chan struct{}), sessions: make(chan *Conn, 1)}
	go h.read()
	return h
}

// Accept runs the host half of the handshake on a fresh connection and returns
// the first session. Closing the session closes raw. For a connection that
// should outlive sessions use NewHost (or Listener.ServeConn).
func Accept(ctx context.Context, raw io.ReadWriteCloser, opts Options) (net.Conn, error) {
	h := NewHost(raw, opts)
	c, err := h.Accept(ctx)
	if err != nil {
		h.Close()
		return nil, err
	}
	c.(*Conn).onClose = func(*Conn) { h.Close() }
	return c, nil
}

// Accept returns the next session the guest starts (its HELLO already ACKed),
// or an error wrapping ErrClosed once the stream ends.
func (h *Host) Accept(ctx context.Context) (net.Conn, error) {
	for {
		select {
		case c := <-h.sessions:
			c.mu.Lock()
			dead := c.rerr != nil
			c.mu.Unlock()
			if dead {
				continue // replaced before anyone took it
			}
			return c, nil
		case <-h.done:
			return nil, fmt.Errorf("%w: %v", ErrClosed, h.readErr())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (h *Host) readErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Close ends the session and closes the underlying stream.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.endCurrent(errors.New("host closed the connection"))
	return h.rw.Close()
}

// Done is closed once the underlying stream has ended.
func (h *Host) Done() <-chan struct{} { return h.done }

func (h *Host) wasEnded(session uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.ended {
		if s == session {
			return true
		}
	}
	return false
}

func (h *Host) endCurrent(err error) {
	h.mu.Lock()
	cur := h.cur
	h.cur = nil
	if cur != nil {
		h.ended = append(h.ended, cur.session)
		if len(h.ended) > 64 {
			h.ended = h.ended[1:]
		}
	}
	h.mu.Unlock()
	if cur != nil {
		cur.end(fmt.Errorf("%w: %v", ErrSessionEnded, err))
	}
}

func (h *Host) forget(c *Conn) {
	h.mu.Lock()
	if h.cur == c {
		h.cur = nil
		h.ended = append(h.ended, c.session)
		if len(h.ended) > 64 {
			h.ended = h.ended[1:]
		}
	}
	h.mu.Unlock()
}

func (h *Host) read() {
	// RESYNC, padding to flush a half-read frame at the guest, RESYNC again —
	// before anything else is written (ACKs follow), so the guest can never
	// see this RESYNC after a session with this host began.
	var b []byte
	b = appendFrame(b, frame{typ: frameResync})
	b = append(b, padding...)
	b = appendFrame(b, frame{typ: frameResync})
	if err := h.out.writeRaw(b); err != nil {
		h.log.Debug("transport: sending RESYNC", "err", err)
	}
	fr := newFrameReader(h.rw)
	var skipped int64
	for {
		f, err := fr.next()
		if err != nil {
			h.mu.Lock()
			h.err = err
			h.mu.Unlock()
			h.endCurrent(fmt.Errorf("stream ended: %v", err))
			close(h.done)
			return
		}
		if n := fr.skipped - skipped; n > 0 {
			skipped = fr.skipped
			h.log.Debug("transport: skipped bytes that were not frames", "bytes", n)
			h.endCurrent(fmt.Errorf("%d bytes of garbage in the stream (guest restarted?)", n))
		}
		h.mu.Lock()
		cur := h.cur
		h.mu.Unlock()
		switch f.typ {
		case frameHello:
			if cur != nil && cur.session == f.session {
				_ = h.out.write(frame{typ: frameAck, session: f.session}) // a repeated HELLO
				continue
			}
			if h.wasEnded(f.session) {
				continue // a HELLO that was still on its way when its session ended
			}
			if cur != nil {
				h.endCurrent(errors.New("guest started a new session"))
			}
			h.mu.Lock()
			h.started++
			tooMany := h.started > h.opts.MaxSessions
			h.mu.Unlock()
			if tooMany {
				err := fmt.Errorf("peer started more than %d sessions on one connection", h.opts.MaxSessions)
				h.log.Warn("transport: closing a connection", "err", err)
				h.mu.Lock()
				h.err = err
				h.mu.Unlock()
				h.rw.Close()
				continue // the next read fails and ends the loop
			}
			c := newConn(f.session, h.out, h.opts.Name, string(f.payload), h.forget, h.opts)
			h.mu.Lock()
			h.cur = c
			h.mu.Unlock()
			if err := h.out.write(frame{typ: frameAck, session: f.session}); err != nil {
				c.end(fmt.Errorf("%w: sending ACK: %v", ErrSessionEnded, err))
				continue
			}
			select { // keep only the newest unaccepted session
			case old := <-h.sessions:
				old.end(fmt.Errorf("%w: replaced before it was accepted", ErrSessionEnded))
			default:
			}
			h.sessions <- c
			h.log.Debug("transport: session accepted", "session", fmt.Sprintf("%016x", f.session), "guest", string(f.payload))
		case frameData:
			if cur != nil && f.session == cur.session && !cur.deliver(f) {
				h.endCurrent(errors.New("sequence gap"))
			}
		case frameClose:
			if cur != nil && f.session == cur.session {
				h.forget(cur)
				cur.end(io.EOF)
			}
		}
	}
}
