package hostd

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
)

// outboxMax bounds the answers (Staged, Collected) waiting for the control stream.
// Beyond it the oldest is dropped, logged and counted: the server times those out.
const outboxMax = 65536

// outbox holds answers for the server until the control stream's sender takes them.
// put never blocks; answers not sent when a stream breaks are sent on the next one.
type outbox struct {
	log     *slog.Logger
	dropped prometheus.Counter
	wake    chan struct{} // a token when q is not empty

	mu sync.Mutex // guards q
	q  []*hostv1.HostMessage
}

func newOutbox(log *slog.Logger, dropped prometheus.Counter) *outbox {
	return &outbox{log: log, dropped: dropped, wake: make(chan struct{}, 1)}
}

// put queues m for the server.
func (o *outbox) put(m *hostv1.HostMessage) {
	o.mu.Lock()
	if len(o.q) >= outboxMax {
		old := o.q[0]
		o.q = o.q[1:]
		o.dropped.Inc()
		o.log.Error("too many answers waiting for the server; dropping the oldest (the server times it out)", "msg", old.String())
	}
	o.q = append(o.q, m)
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// take returns and removes everything queued.
func (o *outbox) take() []*hostv1.HostMessage {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.q
	o.q = nil
	return q
}

// putBack queues ms (taken, not sent) ahead of what came since.
func (o *outbox) putBack(ms []*hostv1.HostMessage) {
	if len(ms) == 0 {
		return
	}
	o.mu.Lock()
	o.q = append(append([]*hostv1.HostMessage(nil), ms...), o.q...)
	o.mu.Unlock()
	o.signal()
}
