package hypervisor

import (
	"time"

	"libvirt.org/go/libvirt"
)

// A libvirtd restart (an apt upgrade, `systemctl restart libvirtd`) closes the
// connection but not the guests: QEMU processes outlive the daemon, and their
// virtio-serial sockets stay open. The Libvirt therefore reconnects, with backoff and
// until Close, instead of failing for good; its lifecycle subscribers keep their
// channels and receive the new connection's events. Calls made while it is down fail
// with ErrUnavailable (callers such as vmpool retry on their next tick and destroy
// nothing for it).

// c returns the current connection.
func (l *Libvirt) c() *libvirt.Connect {
	l.connMu.RLock()
	defer l.connMu.RUnlock()
	return l.conn
}

// use makes conn the current connection: it subscribes to conn's lifecycle events
// and to its closing, which starts a reconnect.
func (l *Libvirt) use(conn *libvirt.Connect) error {
	id, err := conn.DomainEventLifecycleRegister(nil, l.onLifecycle)
	if err != nil {
		return err
	}
	l.connMu.Lock()
	l.conn, l.callbackID = conn, id
	l.connMu.Unlock()
	if err := conn.RegisterCloseCallback(l.onClose); err != nil {
		l.log.Warn("cannot watch the libvirt connection: a libvirtd restart will not be noticed", "err", err)
	}
	return nil
}

// onClose is libvirt's close callback: conn was closed under us (libvirtd stopped or
// restarted, or the socket broke). It starts one reconnect loop unless the Libvirt is
// closed or the connection closed is no longer the current one.
func (l *Libvirt) onClose(conn *libvirt.Connect, reason libvirt.ConnectCloseReason) {
	l.log.Error("libvirt connection closed; reconnecting (guests keep running)", "uri", l.cfg.URI, "reason", closeReason(reason))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.reconnecting {
		return
	}
	l.reconnecting = true
	go l.reconnect(conn)
}

// reconnect dials until a new connection is in use or the Libvirt is closed, waiting
// reconnectMin, then twice as long each failure, up to reconnectMax.
func (l *Libvirt) reconnect(old *libvirt.Connect) {
	defer func() {
		l.mu.Lock()
		l.reconnecting = false
		l.mu.Unlock()
	}()
	l.connMu.RLock()
	oldID := l.callbackID
	l.connMu.RUnlock()
	wait := l.reconnectMin
	for attempt := 1; ; attempt++ {
		select {
		case <-l.done:
			return
		case <-time.After(wait):
		}
		conn, err := l.dial(l.cfg.URI)
		if err == nil {
			if err = l.use(conn); err != nil {
				conn.Close()
			}
		}
		if err != nil {
			l.log.Warn("reconnecting to libvirt", "uri", l.cfg.URI, "attempt", attempt, "err", err, "next_in", min(2*wait, l.reconnectMax))
			wait = min(2*wait, l.reconnectMax)
			continue
		}
		l.mu.Lock()
		closed := l.closed
		if !closed {
			l.reconnects++
		}
		l.mu.Unlock()
		if closed { // Close ran meanwhile: it may have closed old only
			l.connMu.RLock()
			_ = conn.DomainEventDeregister(l.callbackID)
			l.connMu.RUnlock()
			conn.Close()
			return
		}
		l.log.Info("reconnected to libvirt", "uri", l.cfg.URI, "attempts", attempt)
		go func() { // free the dead connection's resources
			_ = old.DomainEventDeregister(oldID)
			_, _ = old.Close()
			if l.retired != nil {
				l.retired()
			}
		}()
		return
	}
}

// Reconnects returns how many times the connection was replaced since Connect.
func (l *Libvirt) Reconnects() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reconnects
}

func closeReason(r libvirt.ConnectCloseReason) string {
	switch r {
	case libvirt.CONNECT_CLOSE_REASON_ERROR:
		return "error"
	case libvirt.CONNECT_CLOSE_REASON_EOF:
		return "eof"
	case libvirt.CONNECT_CLOSE_REASON_KEEPALIVE:
		return "keepalive"
	case libvirt.CONNECT_CLOSE_REASON_CLIENT:
		return "client"
	}
	return "unknown"
}
