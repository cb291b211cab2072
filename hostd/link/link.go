package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/paddockvm/paddock/agent/transport"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
)

// Relay metadata keys (the server reads the same keys: sched.MetaGuest, sched.MetaPool).
const (
	MetaGuest = "paddock-guest"
	MetaPool  = "paddock-pool"
)

// ChunkSize is the largest Chunk a relay sends.
const ChunkSize = 32 << 10

// Dial returns a gRPC client connection to the server's cluster port at addr with
// mutual TLS. It does not block: the first call connects.
//
// addr may list several server replicas (sharing one PostgreSQL store), separated by
// commas: the connection then uses one of them, picked at random (gRPC's pick_first
// with a shuffled list), and when that one dies it moves to the next that answers; the
// daemon's control stream and its guests' relays follow on their next attempt. Each
// replica's certificate is checked against its own host name.
func Dial(addr string, tlsCfg *tls.Config) (*grpc.ClientConn, error) {
	if tlsCfg == nil {
		return nil, errors.New("link: the cluster port needs mutual TLS: no TLS config")
	}
	addrs, err := transport.ParseServers("host.server", addr)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second})}
	target := addrs[0]
	if len(addrs) > 1 {
		r := manual.NewBuilderWithScheme("paddock-servers")
		var st resolver.State
		for _, a := range addrs {
			host, _, _ := net.SplitHostPort(a) // checked by ParseServers
			st.Addresses = append(st.Addresses, resolver.Address{Addr: a, ServerName: host})
		}
		r.InitialState(st)
		target = r.Scheme() + ":///cluster"
		opts = append(opts, grpc.WithResolvers(r),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}`))
	}
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to the server's cluster port %s: %w", addr, err)
	}
	return cc, nil
}

// Addr is the address of a relayed stream.
type Addr struct{ Guest, Pool string }

// Network returns "paddock-relay".
func (Addr) Network() string { return "paddock-relay" }

func (a Addr) String() string { return a.Pool + "/" + a.Guest }

// Conn is a Relay stream as a net.Conn. Close ends the stream.
type Conn struct {
	stream hostv1.HostService_RelayClient
	cancel context.CancelFunc
	addr   Addr

	wmu sync.Mutex // serialises Send

	inner, outer net.Conn // a pipe gives Read its deadlines
	once         sync.Once
}

var _ net.Conn = (*Conn)(nil)

// OpenRelay opens a Relay stream for guest of pool. ctx bounds only the opening (gRPC
// cancels a dialer's context once the connection is up); the stream lives until Close
// or until the connection ends.
func OpenRelay(ctx context.Context, c hostv1.HostServiceClient, guest, pool string) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sctx = metadata.AppendToOutgoingContext(sctx, MetaGuest, guest, MetaPool, pool)
	st, err := c.Relay(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening the relay of guest %s: %w", guest, err)
	}
	inner, outer := net.Pipe()
	rc := &Conn{stream: st, cancel: cancel, addr: Addr{Guest: guest, Pool: pool}, inner: inner, outer: outer}
	go func() { // server → pipe
		defer outer.Close()
		for {
			ch, err := st.Recv()
			if err != nil {
				return
			}
			if _, err := outer.Write(ch.GetData()); err != nil {
				return
			}
		}
	}()
	return rc, nil
}

// Read reads what the server sent.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.inner.Read(p)
	if err != nil && (errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed)) {
		err = io.EOF
	}
	return n, err
}

// Write sends p to the server in chunks of at most ChunkSize.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		k := min(len(p), ChunkSize)
		if err := c.stream.Send(&hostv1.Chunk{Data: append([]byte(nil), p[:k]...)}); err != nil {
			return n, fmt.Errorf("relay to the server: %w", err)
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// Close ends the stream.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.wmu.Lock()
		_ = c.stream.CloseSend()
		c.wmu.Unlock()
		c.cancel()
		c.inner.Close()
	})
	return nil
}

func (c *Conn) LocalAddr() net.Addr                { return c.addr }
func (c *Conn) RemoteAddr() net.Addr               { return c.addr }
func (c *Conn) SetDeadline(t time.Time) error      { return c.inner.SetReadDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.inner.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return nil }
