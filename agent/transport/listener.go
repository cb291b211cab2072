package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// ErrHandshakeTimeout: a connection started no session within Options.HandshakeTimeout.
var ErrHandshakeTimeout = errors.New("transport: no session started within the handshake timeout")

// Listener is a net.Listener of sessions, for a gRPC server: feed it raw
// connections with ServeConn (e.g. connections to guests' virtio-serial
// sockets), or let Listen feed it from a TCP listener.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	inner net.Listener
	opts  Options
}

var _ net.Listener = (*Listener)(nil)

// NewListener returns a Listener reporting addr as its address.
func NewListener(addr net.Addr, opts Options) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{}), opts: opts.withDefaults()}
}

// Listen accepts connections from inner and serves each with ServeConn.
func Listen(inner net.Listener, opts Options) *Listener {
	l := NewListener(inner.Addr(), opts)
	l.inner = inner
	go func() {
		for {
			c, err := inner.Accept()
			if err != nil {
				l.Close()
				return
			}
			go l.ServeConn(context.Background(), c)
		}
	}()
	return l
}

// ServeConn runs a Host on raw and hands each session the guest starts to
// Accept, until raw ends, ctx is done or the Listener is closed; then it closes
// raw and returns.
func (l *Listener) ServeConn(ctx context.Context, raw io.ReadWriteCloser) error {
	h := NewHost(raw, l.opts)
	defer h.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	first := true
	for {
		actx := ctx
		var acancel context.CancelFunc = func() {}
		if first { // a peer that never starts a session does not keep the connection
			actx, acancel = context.WithTimeoutCause(ctx, l.opts.HandshakeTimeout, ErrHandshakeTimeout)
		}
		c, err := h.Accept(actx)
		acancel()
		if err != nil {
			if first && errors.Is(context.Cause(actx), ErrHandshakeTimeout) {
				l.opts.Logger.Debug("transport: closing a connection that sent no HELLO", "timeout", l.opts.HandshakeTimeout)
				return ErrHandshakeTimeout
			}
			return err
		}
		first = false
		select {
		case l.conns <- c:
		case <-ctx.Done():
			c.Close()
			return ctx.Err()
		}
	}
}

// Accept returns the next session.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept (and the inner listener, if any).
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		if l.inner != nil {
			err = l.inner.Close()
		}
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.addr }
