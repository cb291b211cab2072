package transport_test

import (
	"errors"
	"io"
	"sync"
)

// fakePort models a virtio-serial port the way the guest and the host see it:
// it outlives host connections; bytes the guest writes while no host is
// attached, or that a host did not read before it went away, are delivered to
// the next host (stale bytes); bytes a host wrote stay readable by the guest
// after that host is gone; the guest reads EOF while no host is attached.
type fakePort struct {
	mu      sync.Mutex
	cond    *sync.Cond
	toGuest []byte
	toHost  []byte
	host    *hostEnd
	closed  bool
}

func newFakePort() *fakePort {
	p := &fakePort{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// guest returns the guest's end.
func (p *fakePort) guest() io.ReadWriteCloser { return guestEnd{p} }

// connect attaches a new host connection, replacing (closing) the old one.
func (p *fakePort) connect() *hostEnd {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.host != nil {
		p.host.closed = true
	}
	h := &hostEnd{p: p}
	p.host = h
	p.cond.Broadcast()
	return h
}

// injectToHost appends raw bytes as if the guest had written them.
func (p *fakePort) injectToHost(b []byte) {
	p.mu.Lock()
	p.toHost = append(p.toHost, b...)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// injectToGuest appends raw bytes as if a host had written them.
func (p *fakePort) injectToGuest(b []byte) {
	p.mu.Lock()
	p.toGuest = append(p.toGuest, b...)
	p.cond.Broadcast()
	p.mu.Unlock()
}

type guestEnd struct{ p *fakePort }

func (g guestEnd) Read(b []byte) (int, error) {
	p := g.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.toGuest) == 0 {
		if p.closed {
			return 0, errors.New("port closed")
		}
		if p.host == nil {
			return 0, io.EOF // what a virtio port does with no host attached
		}
		p.cond.Wait()
	}
	n := copy(b, p.toGuest)
	p.toGuest = p.toGuest[n:]
	return n, nil
}

func (g guestEnd) Write(b []byte) (int, error) {
	p := g.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, errors.New("port closed")
	}
	p.toHost = append(p.toHost, b...)
	p.cond.Broadcast()
	return len(b), nil
}

func (g guestEnd) Close() error {
	g.p.mu.Lock()
	g.p.closed = true
	g.p.cond.Broadcast()
	g.p.mu.Unlock()
	return nil
}

type hostEnd struct {
	p      *fakePort
	closed bool // guarded by p.mu
}

func (h *hostEnd) Read(b []byte) (int, error) {
	p := h.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.toHost) == 0 && !h.closed {
		p.cond.Wait()
	}
	if h.closed {
		return 0, io.EOF
	}
	n := copy(b, p.toHost)
	p.toHost = p.toHost[n:]
	return n, nil
}

func (h *hostEnd) Write(b []byte) (int, error) {
	p := h.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if h.closed {
		return 0, errors.New("host connection closed")
	}
	p.toGuest = append(p.toGuest, b...)
	p.cond.Broadcast()
	return len(b), nil
}

func (h *hostEnd) Close() error {
	p := h.p
	p.mu.Lock()
	defer p.mu.Unlock()
	h.closed = true
	if p.host == h {
		p.host = nil
	}
	p.cond.Broadcast()
	return nil
}
