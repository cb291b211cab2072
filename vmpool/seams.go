package vmpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// GuestRef is a guest's identity as this host knows it. The relay sends it to the
// server ahead of the guest's stream; the guest's own word is never used.
type GuestRef struct {
	HostID string
	Pool   string
	Name   string
	// Socket is the host end of the guest's virtio-serial port (agent.DefaultPort).
	Socket string
	// InDir and OutDir are the host paths of the guest's input share (read-only in the
	// guest at guestabi.InDir) and output share (writable, guestabi.OutDir); both
	// empty when Config.DisableShares is set. They go with the guest's directory.
	InDir, OutDir string
}

// ReadyInfo is what the guest's ready line said.
type ReadyInfo struct {
	Line         string
	AgentVersion string
	BootMS       int64 // milliseconds from kernel start to the ready line, by the guest's clock
	// ID and Nonce are set by a guest restored from a snapshot (agent/identity.go): the
	// identity it took from the host, and random bytes it drew after reseeding.
	ID, Nonce string
}

// Connector connects to a just-created guest's channel socket and waits for the agent's
// ready line. It returns the connection positioned just after that line: not a byte of
// what follows has been read. SocketConnector is the real one.
type Connector interface {
	WaitReady(ctx context.Context, g GuestRef) (net.Conn, ReadyInfo, error)
}

// Relay takes over a ready guest's connection: later, the host side of
// agent/transport (transport.NewHost on conn, which sends RESYNC and discards
// everything up to a valid HELLO) carrying the session to the server, prefixed with g.
// Serve owns conn and must close it before returning. It returns nil when the guest's
// stream ended (EOF: the guest went away), ctx's error when ctx ended (the pool is
// stopping the guest), or another error when the guest is unhealthy (e.g. no session
// within its deadline); the pool then destroys and replaces the guest, counting it as a
// failed boot if it never started a task.
type Relay interface {
	Serve(ctx context.Context, g GuestRef, conn net.Conn) error
}

// Backlog reports the server's backlog: tasks of a type queued and not yet assigned.
// Counts is the implementation the server feed writes to.
type Backlog interface {
	Backlog(taskType string) int
}

// Load reports the host's latest load sample; *hostload.Monitor implements it.
type Load interface {
	Latest() (hostload.Sample, bool)
}

// Images resolves image references; *images.Store implements it.
type Images interface {
	Get(ref string) (images.Image, error)
}

// Clock gives the time the pool's policies (idle timeout, boot backoff, uptime) use.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

var (
	_ Load   = (*hostload.Monitor)(nil)
	_ Images = (*images.Store)(nil)
)

// Counts is a Backlog held in memory: the server's backlog feed calls Set (or Replace)
// as reports arrive. Safe for concurrent use; the zero value is empty.
type Counts struct {
	mu sync.Mutex // guards m
	m  map[string]int
}

var _ Backlog = (*Counts)(nil)

// Set records n queued tasks of taskType.
func (c *Counts) Set(taskType string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[taskType] = max(n, 0)
}

// Replace replaces every count with m (types absent from m count 0).
func (c *Counts) Replace(m map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = map[string]int{}
	for k, v := range m {
		c.m[k] = max(v, 0)
	}
}

// Backlog returns the count for taskType.
func (c *Counts) Backlog(taskType string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[taskType]
}

// MaxReadyPreamble bounds the bytes a guest may send before its ready line.
const MaxReadyPreamble = 64 << 10

var readyRE = regexp.MustCompile(`^` + regexp.QuoteMeta(agent.ReadyPrefix) + `(?: version=(\S+))?(?: boot_ms=(\d+))?(?: id=(\S+))?(?: nonce=([0-9a-f]+))?`)

// ParseReady parses a ready line ("PADDOCK-AGENT READY version=<v> boot_ms=<ms>").
func ParseReady(line string) (ReadyInfo, bool) {
	line = strings.TrimRight(line, "\r\n")
	m := readyRE.FindStringSubmatch(line)
	if m == nil {
		return ReadyInfo{}, false
	}
	info := ReadyInfo{Line: line, AgentVersion: m[1], ID: m[3], Nonce: m[4]}
	info.BootMS, _ = strconv.ParseInt(m[2], 10, 64)
	return info, true
}

// SocketConnector is the real Connector: it dials the guest's unix socket (libvirt
// creates it when QEMU starts; it retries until it can) and reads lines until one
// starts with agent.ReadyPrefix. It reads one byte at a time so nothing after the
// ready line is consumed: the Relay gets the stream exactly from there.
type SocketConnector struct {
	// RetryEvery is the pause between dial attempts (default 50ms).
	RetryEvery time.Duration
}

var _ Connector = SocketConnector{}

// IdentityConnector is a Connector that can also hand a guest restored from a snapshot
// its identity: connect, send id.Line(), and wait for the ready line that names id.ID
// (ready lines without an id, left from the template, are skipped; another id is an
// error). SocketConnector implements it.
type IdentityConnector interface {
	Connector
	WaitReadyAs(ctx context.Context, g GuestRef, id agent.Identity) (net.Conn, ReadyInfo, error)
}

var _ IdentityConnector = SocketConnector{}

// WaitReady implements Connector.
func (s SocketConnector) WaitReady(ctx context.Context, g GuestRef) (net.Conn, ReadyInfo, error) {
	return s.wait(ctx, g, nil)
}

// WaitReadyAs implements IdentityConnector.
func (s SocketConnector) WaitReadyAs(ctx context.Context, g GuestRef, id agent.Identity) (net.Conn, ReadyInfo, error) {
	return s.wait(ctx, g, &id)
}

func (s SocketConnector) wait(ctx context.Context, g GuestRef, id *agent.Identity) (net.Conn, ReadyInfo, error) {
	every := s.RetryEvery
	if every == 0 {
		every = 50 * time.Millisecond
	}
	var d net.Dialer
	var conn net.Conn
	for {
		c, err := d.DialContext(ctx, "unix", g.Socket)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, ReadyInfo{}, fmt.Errorf("connecting to guest %s at %s: %w (last error: %v)", g.Name, g.Socket, ctx.Err(), err)
		case <-time.After(every):
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if id != nil {
		if _, err := io.WriteString(conn, id.Line()); err != nil {
			conn.Close()
			return nil, ReadyInfo{}, fmt.Errorf("sending guest %s its identity on %s: %w", g.Name, g.Socket, err)
		}
	}
	var line []byte
	var total int
	b := make([]byte, 1)
	for {
		n, err := conn.Read(b)
		if n == 1 {
			total++
			if b[0] != '\n' {
				line = append(line, b[0])
			} else {
				info, ok := ParseReady(string(line))
				if ok && id != nil && info.ID != id.ID {
					if info.ID == "" {
						ok = false // the template's own ready line
					} else {
						conn.Close()
						return nil, ReadyInfo{}, fmt.Errorf("guest %s answered its identity with the id %q instead of %q", g.Name, info.ID, id.ID)
					}
				}
				if ok {
					if !stop() { // ctx ended just now: the deadline may be set
						conn.Close()
						return nil, ReadyInfo{}, fmt.Errorf("waiting for guest %s's ready line: %w", g.Name, ctx.Err())
					}
					return conn, info, nil
				}
				line = line[:0]
			}
			if total > MaxReadyPreamble {
				conn.Close()
				return nil, ReadyInfo{}, fmt.Errorf("guest %s sent %d bytes without a ready line (%q)", g.Name, total, agent.ReadyPrefix)
			}
		}
		if err != nil {
			conn.Close()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, ReadyInfo{}, fmt.Errorf("waiting for guest %s's ready line on %s (got %q): %w", g.Name, g.Socket, line, err)
		}
	}
}

// DrainRelay is the Relay used until the server relay exists: it keeps the guest's
// connection open (so the agent's port stays connected) and discards what the guest
// sends. It returns nil at EOF (the guest is gone) and ctx's error when ctx ends.
type DrainRelay struct{}

var _ Relay = DrainRelay{}

// Serve implements Relay.
func (DrainRelay) Serve(ctx context.Context, g GuestRef, conn net.Conn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_, err := io.Copy(io.Discard, conn)
	conn.Close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("reading guest %s: %w", g.Name, err)
	}
	return nil
}
