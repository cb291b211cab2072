package agent

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	"github.com/paddockvm/paddock/agent/transport"
	"github.com/paddockvm/paddock/internal/buildinfo"
	"github.com/paddockvm/paddock/plugins/runner"
)

// CmdlineIDKey is the kernel command-line key whose value is the agent's identity
// inside a micro-VM (the host daemon sets paddock.id=<guest name>).
const CmdlineIDKey = "paddock.id"

// startRunner starts the handlers.
func startRunner(ctx context.Context, cfg Config, handlers []runner.HandlerSpec, log *slog.Logger) (*runner.Runner, error) {
	rcfg := runner.DefaultConfig()
	rcfg.Handlers = handlers
	rcfg.Logger = log
	// Register first: handlers whose types the manifest records start after the
	// registration — on their first task (lazy), or all of them in the background
	// right after it (eager).
	rcfg.Lazy = true
	if cfg.MaxOutputBytes > 0 {
		rcfg.MaxOutputBytes = cfg.MaxOutputBytes
	}
	if cfg.KillGrace != "" {
		rcfg.KillGrace, _ = time.ParseDuration(cfg.KillGrace) // checked by Validate
	}
	r, err := runner.New(ctx, rcfg)
	if err != nil {
		return nil, fmt.Errorf("starting handlers: %w", err)
	}
	return r, nil
}

// dialEarly starts the transport on the virtio-serial port and its first session at
// once (the HELLO goes out now), and returns the session's dialer: its first call
// takes that session, every later call starts a new one. The handshake's round trip to
// the host (and the host's relay to the server) then overlaps the agent's own set-up
// (manifest, runner, session) instead of following it. Close the Guest when done.
func dialEarly(ctx context.Context, port *os.File, id string, log *slog.Logger) (*transport.Guest, func(context.Context) (net.Conn, error)) {
	g := transport.NewGuest(port, transport.Options{Name: id, EOFIsTransient: true, Logger: log})
	type dialed struct {
		c   net.Conn
		err error
	}
	early := make(chan dialed, 1)
	ectx, cancel := context.WithCancel(ctx)
	go func() {
		c, err := g.Dial(ectx)
		early <- dialed{c, err}
	}()
	var taken atomic.Bool
	return g, func(dctx context.Context) (net.Conn, error) {
		if taken.Swap(true) {
			return g.Dial(dctx)
		}
		select {
		case d := <-early:
			cancel()
			if d.err == nil {
				return d.c, nil
			}
		case <-dctx.Done():
			cancel()
			go func() { // an early session that completes now has no taker: close it
				if d := <-early; d.err == nil {
					d.c.Close()
				}
			}()
			return nil, fmt.Errorf("waiting for the host to accept the first session: %w", dctx.Err())
		}
		return g.Dial(dctx) // the early dial failed: start afresh
	}
}

// serve runs the session with the server as agent id until ctx ends. dial opens the
// session's byte stream (dialEarly's, inside a micro-VM), or is nil to dial cfg.Server
// over TCP. afterRegister, when not nil, runs once after the first registration.
func serve(ctx context.Context, cfg Config, dial func(context.Context) (net.Conn, error), r *runner.Runner, id string, afterRegister func(), log *slog.Logger) error {
	where := "virtio-serial port " + cfg.Port
	if dial == nil {
		addrs := cfg.Server.Addrs()
		dial = session.TCPDialer(addrs[0], addrs[1:]...)
		where = "server " + string(cfg.Server)
	}
	host, _ := os.Hostname()
	tol, defTol, _ := cfg.tolerableDelays() // checked by Validate
	s, err := session.New(session.Config{
		AgentID:               id,
		Host:                  host,
		Version:               buildinfo.String(),
		Dial:                  dial,
		Token:                 cfg.Token,
		TotalSlots:            cfg.TotalSlots,
		Slots:                 cfg.Slots,
		DefaultSlots:          cfg.DefaultSlots,
		MinSlots:              cfg.MinSlots,
		TolerableDelay:        tol,
		DefaultTolerableDelay: defTol,
		Capacity:              session.Capacity{CPUMillis: int64(runtime.NumCPU()) * 1000, MemoryBytes: memTotal(), Labels: cfg.Labels},
		Logger:                log,
		DataDir:               cfg.DataDir,
		Memory:                memoryOf(r),
		OnRegistered:          onRegistered(ctx, cfg, r, afterRegister),
	}, session.RunnerExecutor(r))
	if err != nil {
		return fmt.Errorf("starting the session: %w", err)
	}
	var types []string
	for _, t := range r.Types() {
		types = append(types, t.Name)
	}
	log.Info("agent serving", "id", id, "via", where, "types", strings.Join(types, ","))
	return s.Run(ctx)
}

// agentID is cfg.ID, else paddock.id= from the kernel command line, else the host
// name with a random suffix ("build-7-3f9a2c"), unique per process: two agents
// started on one machine without an id must not take each other's place at the
// server (the server replaces an agent's session when the same id connects again).
func (c Config) agentID() string {
	if c.ID != "" {
		return c.ID
	}
	if b, err := os.ReadFile("/proc/cmdline"); err == nil {
		if id := CmdlineValue(string(b), CmdlineIDKey); id != "" {
			return id
		}
	}
	h, err := os.Hostname()
	if err != nil || h == "" || !idRE.MatchString(h) {
		h = "agent"
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	return fmt.Sprintf("%.120s-%x", h, suffix)
}

// CmdlineValue returns the value of key=value in a kernel command line, or "".
func CmdlineValue(cmdline, key string) string {
	for _, f := range strings.Fields(cmdline) {
		if k, v, ok := strings.Cut(f, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// handlerSpecs returns the handlers to run: cfg.Handlers, or else those in the image
// manifest at manifestPath (when it exists). A configured handler without a sha256 has
// its checksum read now and pinned for the agent's life.
func (c Config) handlerSpecs(manifestPath string, log *slog.Logger) ([]runner.HandlerSpec, error) {
	var out []runner.HandlerSpec
	if len(c.Handlers) > 0 {
		for i, h := range c.Handlers {
			sum := h.SHA256
			if sum == "" {
				var err error
				if sum, err = runner.SHA256File(h.Path); err != nil {
					return nil, fmt.Errorf("agent config field handlers[%d] (%s): %w", i, h.Name, err)
				}
				log.Info("handler checksum pinned at start (none configured)", "handler", h.Name, "path", h.Path, "sha256", sum)
			}
			out = append(out, runner.HandlerSpec{Name: h.Name, Path: h.Path, SHA256: sum})
		}
		return out, nil
	}
	if _, err := os.Stat(manifestPath); err != nil {
		return nil, nil
	}
	m, err := LoadManifest(manifestPath)
	if err != nil {
		return nil, err
	}
	if d := m.HandlerDisk; d != nil && len(m.Handlers) > 0 {
		if _, err := os.Stat(m.Handlers[0].Path); err != nil {
			// PID 1 mounts the disk before it starts the agent, and stops the guest
			// when it cannot: this is an agent started some other way.
			log.Error("handler disk not mounted: handlers will fail to start", "mount", d.Mount, "serial", d.Serial, "err", err)
		}
	}
	for _, h := range m.Handlers {
		spec := runner.HandlerSpec{Name: h.Name, Path: h.Path, Packed: h.Packed, SHA256: h.SHA256,
			// On the read-only handler disk, whose digest the host checked: not hashed again.
			Verified: h.Packed == "" && m.onHandlerDisk(h.Path)}
		for _, t := range h.Types {
			spec.Types = append(spec.Types, runner.TaskType{Name: t.Name, Version: t.Version, Concurrency: t.Concurrency})
		}
		out = append(out, spec)
	}
	return out, nil
}
