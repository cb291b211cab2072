package transport

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"
)

// DialAttemptTimeout bounds one TCP dial of a ServerList (a server that does not
// answer, rather than refusing, costs this much before the next one is tried).
const DialAttemptTimeout = 3 * time.Second

// ServerList dials one of several servers (replicas sharing one store) over TCP, each
// time starting after the one it reached last, so that a client whose server died
// reconnects to another. The first dial starts at a random server, which spreads
// clients over the replicas. It is safe for concurrent use.
type ServerList struct {
	addrs []string
	opts  Options

	mu   sync.Mutex
	next int // index of the server the next Dial tries first
	last string
}

// ParseServers splits a server list given as one string ("a:7071,b:7071"; a single
// "host:port" is a list of one) and checks each element is host:port. field names the
// setting in errors.
func ParseServers(field, list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%s: %q is not host:port; give one server (\"10.0.0.5:7071\") or several separated by commas (\"10.0.0.5:7071,10.0.0.6:7071\")", field, a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no server given; give host:port, or several separated by commas", field)
	}
	return out, nil
}

// NewServerList returns a dialer over addrs (at least one).
func NewServerList(addrs []string, opts Options) (*ServerList, error) {
	if len(addrs) == 0 {
		return nil, errors.New("server list: no server address")
	}
	return &ServerList{addrs: append([]string(nil), addrs...), opts: opts, next: rand.IntN(len(addrs))}, nil
}

// Dial tries every server once, starting after the one reached last, and returns a
// session with the first that answers (see DialTCP). It fails only when none does;
// the caller retries with its backoff.
func (l *ServerList) Dial(ctx context.Context) (net.Conn, error) {
	l.mu.Lock()
	start := l.next
	l.mu.Unlock()
	var errs []error
	for i := range l.addrs {
		k := (start + i) % len(l.addrs)
		actx, cancel := context.WithTimeout(ctx, DialAttemptTimeout)
		c, err := DialTCP(actx, l.addrs[k], l.opts)
		cancel()
		if err == nil {
			l.mu.Lock()
			l.next, l.last = (k+1)%len(l.addrs), l.addrs[k]
			l.mu.Unlock()
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	l.mu.Lock()
	l.next = (start + 1) % len(l.addrs)
	l.mu.Unlock()
	return nil, fmt.Errorf("no server of %d answered: %w", len(l.addrs), errors.Join(errs...))
}

// Last returns the server the last successful Dial reached ("" before one).
func (l *ServerList) Last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}
