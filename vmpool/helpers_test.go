package vmpool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor/hypervisortest"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/vmpool/hostload"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeImage writes a synthetic image (files that exist, a manifest with handlers) into
// a real images.Store in dir and returns its digest. Each handler is "name", serving the
// task type of the same name, or "name=type1,type2" for a handler serving several.
func fakeImage(t testing.TB, dir string, handlers ...string) (*images.Store, images.Image) {
	t.Helper()
	return fakeImageSchema(t, dir, images.SchemaVersion, handlers...)
}

// fakeImageSchema is fakeImage with a manifest of the given schema; before schema 2
// manifests record no task types, so its handlers have none.
func fakeImageSchema(t testing.TB, dir string, schema int, handlers ...string) (*images.Store, images.Image) {
	t.Helper()
	store, err := images.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	m := images.Manifest{Schema: schema, KernelVersion: "9.9.9-test",
		Kernel:    &images.File{Path: images.KernelFile, Size: 7},
		Initramfs: &images.File{Path: images.InitramfsFile, Size: 3 << 20},
		Agent:     images.Binary{Name: "paddock-agent", Path: "/init", Size: 9 << 20}}
	for _, h := range handlers {
		name, types, ok := strings.Cut(h, "=")
		if !ok {
			types = name
		}
		b := images.Binary{Name: name, Path: "/usr/lib/paddock/handlers/" + name, Size: 5 << 20}
		for _, tt := range strings.Split(types, ",") {
			if schema < 2 {
				break
			}
			b.Types = append(b.Types, images.TaskType{Name: tt, Version: "1.0.0", Concurrency: 2})
		}
		m.Handlers = append(m.Handlers, b)
	}
	digest, err := m.ComputeDigest()
	if err != nil {
		t.Fatal(err)
	}
	m.Digest = digest
	idir := filepath.Join(store.Dir(), digest)
	if err := os.MkdirAll(idir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	for name, data := range map[string][]byte{images.KernelFile: []byte("kernel!"), images.InitramfsFile: []byte("cpio"), images.ManifestFile: b} {
		if err := os.WriteFile(filepath.Join(idir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := store.Get(digest)
	if err != nil {
		t.Fatal(err)
	}
	return store, img
}

// fakeClock is a Clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeConnector is a Connector whose behaviour tests set: ready at once (default),
// fail, or never ready. Ready guests get one end of a net.Pipe; the test can close the
// other end to end the guest's stream.
type fakeConnector struct {
	mu    sync.Mutex
	mode  string // "", "fail", "hang"
	calls int
	peers map[string]net.Conn
	// gate, when set, holds every WaitReady until a value can be received from it
	// (or its ctx ends); waiting counts the calls held there.
	gate    chan struct{}
	waiting int
}

func (c *fakeConnector) set(mode string) {
	c.mu.Lock()
	c.mode = mode
	c.mu.Unlock()
}

func (c *fakeConnector) WaitReady(ctx context.Context, g GuestRef) (net.Conn, ReadyInfo, error) {
	c.mu.Lock()
	mode, gate := c.mode, c.gate
	c.calls++
	c.mu.Unlock()
	if gate != nil {
		c.mu.Lock()
		c.waiting++
		c.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done():
		}
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
		if ctx.Err() != nil {
			return nil, ReadyInfo{}, ctx.Err()
		}
	}
	switch mode {
	case "fail":
		return nil, ReadyInfo{}, errors.New("scripted boot failure")
	case "hang":
		<-ctx.Done()
		return nil, ReadyInfo{}, ctx.Err()
	}
	a, b := net.Pipe()
	c.mu.Lock()
	if c.peers == nil {
		c.peers = map[string]net.Conn{}
	}
	c.peers[g.Name] = b
	c.mu.Unlock()
	return a, ReadyInfo{Line: "PADDOCK-AGENT READY version=test boot_ms=1", AgentVersion: "test", BootMS: 1}, nil
}

func (c *fakeConnector) endStream(name string) {
	c.mu.Lock()
	p := c.peers[name]
	c.mu.Unlock()
	if p != nil {
		p.Close()
	}
}

// staticLoad is a Load with a sample tests set.
type staticLoad struct {
	mu sync.Mutex
	s  hostload.Sample
	ok bool
}

func (l *staticLoad) set(cpu float64) {
	l.mu.Lock()
	l.s = hostload.Sample{Time: time.Now(), Interval: time.Hour, CPUPercent: cpu, MemAvailableBytes: 8 << 30, MemTotalBytes: 16 << 30}
	l.ok = true
	l.mu.Unlock()
}

func (l *staticLoad) Latest() (hostload.Sample, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s, l.ok
}

// logBuf collects log output safely.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  testing.TB
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if testing.Verbose() {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is one unit-test setup: a Fake hypervisor, a store with one image, a manager.
type env struct {
	t       *testing.T
	hv      *hypervisortest.Fake
	store   *images.Store
	img     images.Image
	clock   *fakeClock
	conn    *fakeConnector
	backlog *Counts
	load    *staticLoad
	reg     *prometheus.Registry
	logs    *logBuf
	m       *Manager
	cancel  context.CancelFunc
	done    chan error
	runDir  string
}

// oldImageRef as a pool's image makes newEnv put an image with a schema 1 manifest
// (no task types recorded) in the store and point the pool at it.
const oldImageRef = "old-schema-image"

func newEnv(t *testing.T, cfg Config, extra ...Option) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, hv: hypervisortest.New("paddock-"), clock: newFakeClock(), conn: &fakeConnector{}, backlog: &Counts{}, load: &staticLoad{},
		reg: prometheus.NewPedanticRegistry(), logs: &logBuf{t: t}, runDir: filepath.Join(dir, "run")}
	// Like the real images: one handler ("tester") serves several types under a name
	// that is none of them.
	e.store, e.img = fakeImage(t, dir, "tester=echo,sleep", "checksum")
	if cfg.HostID == "" {
		cfg.HostID = "host-test"
	}
	cfg.RunDir = e.runDir
	if cfg.Tick == 0 {
		cfg.Tick = 5 * time.Millisecond
	}
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = 20 * time.Millisecond
	}
	for i := range cfg.Pools {
		switch cfg.Pools[i].Image {
		case "":
			cfg.Pools[i].Image = e.img.Digest
		case oldImageRef:
			_, old := fakeImageSchema(t, dir, 1, "sleep")
			cfg.Pools[i].Image = old.Digest
		}
	}
	opts := append([]Option{WithLogger(slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		WithClock(e.clock), WithConnector(e.conn), WithBacklog(e.backlog), WithLoad(e.load), WithRegisterer(e.reg)}, extra...)
	m, err := New(cfg, e.hv, e.store, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.m = m
	return e
}

func (e *env) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.m.Run(ctx) }()
	e.t.Cleanup(e.stop)
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		e.t.Errorf("Run did not return 10 s after its context ended")
	}
}

// eventually polls cond until it holds or 5 s pass.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; guests: %+v; pools: %+v", what, brief(e.m.Snapshot()), e.m.Pools())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// steady checks cond keeps holding for a while (many reconcile ticks).
func (e *env) steady(what string, cond func() bool) {
	e.t.Helper()
	for end := time.Now().Add(150 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if !cond() {
			e.t.Fatalf("%s stopped holding; guests: %+v", what, brief(e.m.Snapshot()))
		}
	}
}

func brief(gs []GuestInfo) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Name+":"+string(g.State))
	}
	return out
}

// count returns the pool's guests in the given states (all states when none given).
func (e *env) count(pool string, states ...GuestState) int {
	n := 0
	for _, g := range e.m.Snapshot() {
		if g.Pool != pool {
			continue
		}
		if len(states) == 0 {
			n++
			continue
		}
		for _, s := range states {
			if g.State == s {
				n++
			}
		}
	}
	return n
}

func (e *env) domains() int {
	l, err := e.hv.List(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return len(l)
}

func (e *env) guestsIn(pool string, state GuestState) []string {
	var out []string
	for _, g := range e.m.Snapshot() {
		if g.Pool == pool && g.State == state {
			out = append(out, g.Name)
		}
	}
	return out
}

var _ io.Writer = (*logBuf)(nil)
