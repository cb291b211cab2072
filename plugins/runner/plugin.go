package runner

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/paddockvm/paddock/plugins/internal/contract"
	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// This file is the agent's go-plugin client: the host side of go-plugin's
// protocol (github.com/hashicorp/go-plugin, docs/internals.md), gRPC only, with
// AutoMTLS. Handlers stay ordinary go-plugin servers. See doc.go for why it is
// not go-plugin's own Client.

// goPluginCoreVersion is go-plugin's core protocol version (the handshake line's
// first field).
const goPluginCoreVersion = 1

// shutdownGrace is how long close waits for a handler to exit after asking it to
// (go-plugin's Client.Kill waits as long).
const shutdownGrace = 2 * time.Second

// stderrTail is how many of a handler's last stderr lines a start error quotes.
const stderrTail = 8

// pluginConfig is one start of a handler process.
type pluginConfig struct {
	cmd *exec.Cmd // not started; Env, SysProcAttr set
	sum []byte    // the binary's expected sha256
	// verified: the binary was checked as it was unpacked for this start (unpack), so
	// it is not read again.
	verified bool
	// cert returns the agent's TLS client certificate and its PEM (nil: a fresh one,
	// clientCert).
	cert    func() (tls.Certificate, []byte, error)
	timeout time.Duration // exec to Describe's answer, counted while the process makes no progress (startClock)
	stderr  func(line string)
	stdout  io.Writer // the handler's os.Stdout after Serve (go-plugin's stdio stream)
	errout  io.Writer // its os.Stderr after Serve
	// dial connects to the address of the handshake line (nil: a net.Dialer). Tests
	// put a slow connection here.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// startTimes are the parts of one handler start, as the agent measured them (wall
// time; the "handler started" log line carries them). Zero: not done (unpack of a
// binary that was not packed, or already unpacked).
type startTimes struct {
	unpack    time.Duration // decompressing the packed binary (HandlerSpec.Packed)
	verify    time.Duration // its sha256, just before exec
	cert      time.Duration // the agent's key and self-signed certificate
	handshake time.Duration // exec until go-plugin's handshake line on its stdout
	tls       time.Duration // the TLS handshake of the connection that served Describe
	describe  time.Duration // handshake line until Describe answered (tls included)
}

// logAttrs are t as slog attributes, in milliseconds.
func (t startTimes) logAttrs() []any {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return []any{"unpack_ms", ms(t.unpack), "verify_ms", ms(t.verify), "cert_ms", ms(t.cert),
		"exec_to_handshake_ms", ms(t.handshake), "tls_ms", ms(t.tls), "describe_ms", ms(t.describe)}
}

// pluginClient is one running handler process and the gRPC connection to it.
type pluginClient struct {
	cmd  *exec.Cmd
	conn *grpc.ClientConn

	exited  chan struct{} // closed once the process has exited and its stderr is read
	waitErr error         // cmd.Wait's; set before exited is closed

	closeOnce sync.Once

	// started is the start's deadline (startClock), until the caller's first call
	// (Describe) answers; startDone releases it.
	started     context.Context
	startDone   func()
	handshakeAt time.Time // when the handshake line was read

	// times are the start's parts; tlsTime is set by the connection's TLS handshake
	// (the last one to complete, read once Describe answered).
	times   startTimes
	tlsTime atomic.Int64
}

// handshakeError is a handler that did not complete go-plugin's handshake.
type handshakeError struct {
	what   string   // what went wrong, for the message
	stderr []string // its last stderr lines
}

func (e *handshakeError) Error() string {
	if len(e.stderr) == 0 {
		return e.what
	}
	return e.what + "; its last stderr lines: " + strings.Join(e.stderr, " | ")
}

// startPlugin verifies the binary, starts it with go-plugin's environment, reads
// its handshake line, and connects to it over mutual TLS. On error the process is
// killed.
func startPlugin(ctx context.Context, cfg pluginConfig) (_ *pluginClient, err error) {
	var times startTimes
	t0 := time.Now()
	// The same check go-plugin's SecureConfig makes: hash just before exec.
	if !cfg.verified {
		if err := VerifyFile(cfg.cmd.Path, cfg.sum); err != nil {
			return nil, err
		}
	}
	t1 := time.Now()
	times.verify = t1.Sub(t0)
	certFn := cfg.cert
	if certFn == nil {
		certFn = clientCert
	}
	cert, certPEM, err := certFn()
	if err != nil {
		return nil, fmt.Errorf("making the TLS client certificate: %w", err)
	}
	times.cert = time.Since(t1)
	cmd := cfg.cmd
	cmd.Env = append(cmd.Env,
		contract.MagicCookieKey+"="+contract.MagicCookieValue,
		"PLUGIN_MIN_PORT=10000", "PLUGIN_MAX_PORT=25000", // go-plugin's defaults (TCP only: not used on unix)
		"PLUGIN_PROTOCOL_VERSIONS="+strconv.Itoa(contract.ProtocolVersion),
		"PLUGIN_CLIENT_CERT="+string(certPEM),
	)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("making the stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("making the stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	execAt := time.Now()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("exec: %w", err)
	}

	c := &pluginClient{cmd: cmd, exited: make(chan struct{}), times: times}
	c.started, c.startDone = startClock(ctx, cmd.Process.Pid, cfg.timeout)
	tail := &lineTail{max: stderrTail}
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		defer errR.Close()
		readLines(errR, func(line string) {
			tail.add(line)
			cfg.stderr(line)
		})
	}()
	go func() {
		c.waitErr = cmd.Wait()
		// The lines it wrote before it died belong before its exit; a child that
		// kept the pipe open must not hold the exit back for long.
		select {
		case <-stderrDone:
		case <-time.After(time.Second):
		}
		close(c.exited)
	}()
	defer func() {
		if err != nil {
			c.startDone()
			c.kill()
			<-c.exited
			if he := (*handshakeError)(nil); errors.As(err, &he) {
				he.stderr = tail.lines()
			}
		}
	}()

	lines := make(chan string, 1)
	go func() {
		defer outR.Close()
		sc := bufio.NewScanner(outR)
		first := true
		for sc.Scan() { // after the handshake go-plugin servers write nothing here; drain
			if first {
				lines <- sc.Text()
				first = false
			}
		}
		if first {
			close(lines)
		}
	}()
	var line string
	select {
	case <-c.started.Done():
		if cause := context.Cause(c.started); errors.Is(cause, errNoProgress) {
			return nil, &handshakeError{what: fmt.Sprintf("no go-plugin handshake line on its stdout: %v: is it stuck before sdk.Serve?", cause)}
		}
		return nil, ctx.Err()
	case l, ok := <-lines:
		if !ok {
			select {
			case <-c.exited:
				return nil, &handshakeError{what: fmt.Sprintf("it exited (%v) before its go-plugin handshake: is it a handler built with plugins/sdk?", c.waitErr)}
			case <-time.After(time.Second):
				return nil, &handshakeError{what: "it closed its stdout without printing go-plugin's handshake line"}
			}
		}
		line = l
	}
	c.times.handshake = time.Since(execAt)
	c.handshakeAt = time.Now()
	hs, err := parseHandshake(line)
	if err != nil {
		return nil, &handshakeError{what: err.Error()}
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      hs.cert,
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS12,
	}
	dial := cfg.dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	c.conn, err = grpc.NewClient("passthrough:///handler",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return dial(ctx, hs.network, hs.addr)
		}),
		grpc.WithTransportCredentials(timedCreds{credentials.NewTLS(tlsCfg), &c.tlsTime}),
		// gRPC gives each connection attempt (dial and TLS handshake) max(20 s, backoff)
		// of its own: in a guest starved of CPU go-plugin's handshake took longer, and
		// the start failed with "authentication handshake failed: context deadline
		// exceeded" although both processes were working. The start's own deadline
		// (startClock, with describe's WaitForReady) bounds the attempt instead; after
		// the start a broken connection is the handler's crash, seen by its exit.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: connectTimeout(cfg.timeout),
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(contract.MaxMessageBytes)),
		grpc.WithSharedWriteBuffer(true), // no 32 KiB buffer held per idle handler
	)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s %s: %w", hs.network, hs.addr, err)
	}
	go c.copyStdio(cfg.stdout, cfg.errout)
	return c, nil
}

// connectTimeout is the time gRPC gives one attempt to connect to a handler (dial
// and TLS handshake): as long as the longest start (startClock), so only the start's
// deadline ends a start.
func connectTimeout(startTimeout time.Duration) time.Duration {
	return startLimitFactor * startTimeout
}

// describe asks the handler for its types: the start's last step, under its deadline
// (startClock), which it then releases. It waits for the connection to become ready
// (WaitForReady): a connection attempt that fails in a start (a handshake cut short,
// "use of closed network connection" while the handler was still setting up) is
// retried, not the start's end.
// A handler that exits meanwhile ends the wait at once.
func (c *pluginClient) describe(rpc handlerpb.HandlerClient) (*handlerpb.DescribeResponse, error) {
	defer c.startDone()
	ctx, cancel := context.WithCancelCause(c.started)
	defer cancel(nil)
	go func() {
		select {
		case <-c.exited:
			cancel(errExitedInStart)
		case <-ctx.Done():
		}
	}()
	desc, err := rpc.Describe(ctx, &handlerpb.DescribeRequest{}, grpc.WaitForReady(true))
	if err == nil {
		c.times.describe = time.Since(c.handshakeAt)
		c.times.tls = time.Duration(c.tlsTime.Load())
		return desc, nil
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errNoProgress):
		return nil, fmt.Errorf("%w (%v)", cause, err)
	case errors.Is(cause, errExitedInStart):
		return nil, fmt.Errorf("%w (%v) before answering Describe", cause, c.waitErr)
	}
	return nil, err
}

// timedCreds records how long each client TLS handshake took in *d (the last one
// wins: a start's Describe rides on the connection whose handshake completed last).
type timedCreds struct {
	credentials.TransportCredentials
	d *atomic.Int64
}

func (c timedCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	t0 := time.Now()
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err == nil {
		c.d.Store(int64(time.Since(t0)))
	}
	return conn, info, err
}

func (c timedCreds) Clone() credentials.TransportCredentials {
	return timedCreds{c.TransportCredentials.Clone(), c.d}
}

// errExitedInStart ends a start whose handler exited after its handshake line.
var errExitedInStart = errors.New("the handler exited during its start")

// handshake is go-plugin's handshake line, parsed.
type handshake struct {
	network, addr string
	cert          *x509.CertPool
}

// parseHandshake parses the line a go-plugin server prints on its stdout when it
// is ready: CORE-VERSION|APP-VERSION|NETWORK|ADDR|PROTOCOL|SERVER-CERT (the
// certificate base64, DER, when the client sent PLUGIN_CLIENT_CERT). A further
// field (gRPC broker multiplexing) is ignored: the agent opens no broker.
func parseHandshake(line string) (handshake, error) {
	const want = "core|app|network|addr|grpc|cert"
	line = strings.TrimSpace(line)
	parts := strings.Split(line, "|")
	if len(parts) < 4 {
		return handshake{}, fmt.Errorf("its first stdout line %q is not a go-plugin handshake line (%s): is it a handler built with plugins/sdk, and does it print nothing to stdout before sdk.Serve?", cut(line, 200), want)
	}
	if parts[0] != strconv.Itoa(goPluginCoreVersion) {
		return handshake{}, fmt.Errorf("it speaks go-plugin core protocol %q, the agent %d: rebuild it with the go-plugin version of plugins/sdk", parts[0], goPluginCoreVersion)
	}
	if parts[1] != strconv.Itoa(contract.ProtocolVersion) {
		return handshake{}, fmt.Errorf("it speaks handler protocol version %q, this agent %d: rebuild it with a matching plugins/sdk", parts[1], contract.ProtocolVersion)
	}
	hs := handshake{network: parts[2], addr: parts[3]}
	if hs.network != "unix" && hs.network != "tcp" {
		return handshake{}, fmt.Errorf("it listens on network %q: only unix and tcp are supported", hs.network)
	}
	if len(parts) < 5 || parts[4] != "grpc" {
		proto := "netrpc (no protocol field)"
		if len(parts) >= 5 {
			proto = parts[4]
		}
		return handshake{}, fmt.Errorf("it serves go-plugin protocol %q: the agent speaks only grpc (serve with plugins/sdk, or set GRPCServer in plugin.ServeConfig)", proto)
	}
	if len(parts) < 6 || parts[5] == "" {
		return handshake{}, errors.New("it sent no TLS certificate in its handshake although the agent sent PLUGIN_CLIENT_CERT: the agent requires go-plugin's AutoMTLS (go-plugin 1.3 or later)")
	}
	der, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil {
		return handshake{}, fmt.Errorf("its handshake's TLS certificate is not base64: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return handshake{}, fmt.Errorf("its handshake's TLS certificate: %w", err)
	}
	hs.cert = x509.NewCertPool()
	hs.cert.AddCert(cert)
	return hs, nil
}

// clientCert makes the agent's certificate for its handlers, as go-plugin's AutoMTLS
// does, on P-256 (contract.AutoMTLSCert), and its PEM.
func clientCert() (tls.Certificate, []byte, error) {
	cert, der, err := contract.AutoMTLSCert("Paddock agent")
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// rawCodec passes the bytes of go-plugin's own services' messages through
// unchanged (*[]byte both ways): the agent encodes and decodes them itself rather
// than link (or register a second copy of) go-plugin's generated protobuf types.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append((*v.(*[]byte))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// copyStdio copies what the handler writes to its os.Stdout and os.Stderr after
// Serve (go-plugin's GRPCStdio service, plugin.StdioData{channel=1, data=2}) to
// stdout and stderr, until the connection ends.
func (c *pluginClient) copyStdio(stdout, stderr io.Writer) {
	desc := &grpc.StreamDesc{StreamName: "StreamStdio", ServerStreams: true}
	s, err := c.conn.NewStream(context.Background(), desc, "/plugin.GRPCStdio/StreamStdio", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return
	}
	empty := []byte{}
	if s.SendMsg(&empty) != nil || s.CloseSend() != nil {
		return
	}
	var msg []byte
	for s.RecvMsg(&msg) == nil {
		ch, data := decodeStdio(msg)
		switch ch {
		case 1:
			_, _ = stdout.Write(data)
		case 2:
			_, _ = stderr.Write(data)
		}
	}
}

// decodeStdio decodes a plugin.StdioData message; a malformed one gives channel 0.
func decodeStdio(b []byte) (channel int, data []byte) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, nil
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return 0, nil
			}
			channel, b = int(v), b[m:]
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return 0, nil
			}
			data, b = v, b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return 0, nil
			}
			b = b[m:]
		}
	}
	return channel, data
}

// close asks the handler to exit (go-plugin's GRPCController.Shutdown), waits up
// to shutdownGrace for it, and kills it (with its process group) if it has not.
func (c *pluginClient) close() {
	c.closeOnce.Do(func() {
		if c.conn != nil {
			ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			empty, out := []byte{}, []byte{}
			_ = c.conn.Invoke(ctx, "/plugin.GRPCController/Shutdown", &empty, &out, grpc.ForceCodec(rawCodec{}))
			select {
			case <-c.exited:
			case <-ctx.Done():
			}
			cancel()
			_ = c.conn.Close()
		}
		c.kill()
	})
}

// kill ends the process at once (SIGKILL), with its process group.
func (c *pluginClient) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	killGroup(c.cmd)
	_ = c.cmd.Process.Kill()
}

// readLines calls f with each line of r (a longer one than maxLogLine in pieces)
// until r ends.
func readLines(r io.Reader, f func(string)) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			f(strings.TrimRight(string(line), "\r\n"))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// lineTail keeps the last max lines it was given.
type lineTail struct {
	max int
	// mu guards l.
	mu sync.Mutex
	l  []string
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.l) == t.max {
		t.l = t.l[1:]
	}
	t.l = append(t.l, cut(line, 300))
}

func (t *lineTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.l...)
}

// cut shortens s to at most n bytes, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
