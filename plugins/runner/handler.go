package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paddockvm/paddock/plugins/internal/contract"
	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// handler supervises the processes of one handler binary.
type handler struct {
	r    *Runner
	spec HandlerSpec
	sum  []byte
	log  *slog.Logger
	tap  *logTap // files the lines its processes log under their calls

	// mu guards the fields below.
	mu       sync.Mutex
	cur      *proc         // the running process; nil while down
	up       chan struct{} // closed while cur != nil; replaced when it goes down
	restarts int
	lastExit string
	closed   bool
	// launched is set once a process of the handler is up and supervised (in New, or
	// on the first call of a lazy handler); attempt is the lazy start in progress.
	launched bool
	attempt  *startAttempt
}

// startAttempt is one lazy start of a handler; err is set before done is closed.
type startAttempt struct {
	done chan struct{}
	err  error
}

// declared returns the handler's declared types (HandlerSpec.Types) as served by it.
func (h *handler) declared() []TaskType {
	out := make([]TaskType, len(h.spec.Types))
	for i, t := range h.spec.Types {
		t.Handler = h.spec.Name
		out[i] = t
	}
	return out
}

// checkDeclared refuses a lazily started handler that does not serve exactly the
// types its image recorded: the agent registered those with the server.
func (h *handler) checkDeclared(got []TaskType) error {
	key := func(ts []TaskType) string {
		var parts []string
		for _, t := range ts {
			parts = append(parts, t.Name+"@"+t.Version)
		}
		sort.Strings(parts)
		return strings.Join(parts, ", ")
	}
	if g, w := key(got), key(h.spec.Types); g != w {
		return fmt.Errorf("refusing handler %q (%s): it serves [%s] but its image recorded [%s]: rebuild the image", h.spec.Name, h.spec.Path, g, w)
	}
	return nil
}

// launch starts a lazy handler for the calls waiting on a, and supervises it.
func (h *handler) launch(a *startAttempt) {
	defer h.r.wg.Done()
	h.log.Info("starting handler on first use")
	p, types, err := h.start(h.r.ctx)
	if err == nil {
		if err = h.checkDeclared(types); err != nil {
			p.client.close()
		}
	}
	h.mu.Lock()
	switch {
	case err != nil:
		h.attempt, a.err = nil, err
		h.log.Error("handler did not start", "err", err)
	case h.closed:
		p.client.close()
		a.err = errors.New("the runner is closed")
	default:
		h.launched = true
		h.cur = p
		close(h.up)
		h.r.wg.Add(1)
		go h.supervise(p)
	}
	h.mu.Unlock()
	close(a.done)
}

// proc is one running process of a handler.
type proc struct {
	client  *pluginClient
	cmd     *exec.Cmd
	rpc     handlerpb.HandlerClient
	started time.Time
	exited  chan struct{} // closed once the process has exited
	// batchless is set once the process answered HandleBatch with Unimplemented.
	batchless atomic.Bool

	// killMu guards killReason.
	killMu     sync.Mutex
	killReason string
}

func (p *proc) pid() int {
	if p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *proc) killed() string {
	p.killMu.Lock()
	defer p.killMu.Unlock()
	return p.killReason
}

// start verifies the binary, launches it and describes it.
func (h *handler) start(ctx context.Context) (*proc, []TaskType, error) {
	t0 := time.Now()
	verified := h.spec.Verified // checked on the host (a read-only handler disk), or as it was unpacked
	if h.spec.Packed != "" {
		sum, checked, err := unpack(h.spec.Packed, h.spec.Path)
		if err != nil {
			return nil, nil, fmt.Errorf("refusing handler %q: %w", h.spec.Name, err)
		}
		switch {
		case checked:
			verified = true
		case sum != nil && !bytes.Equal(sum, h.sum):
			return nil, nil, fmt.Errorf("refusing handler %q: %w: %s unpacked from %s has sha256 %x, the manifest says %x", h.spec.Name, ErrChecksum, h.spec.Path, h.spec.Packed, sum, h.sum)
		case sum != nil:
			verified = true
		}
	}
	unpacked := time.Since(t0)
	if _, err := os.Stat(h.spec.Path); err != nil {
		return nil, nil, fmt.Errorf("refusing handler %q: %w", h.spec.Name, err)
	}
	cmd := osExec(h.spec.Path, h.spec.Args...)
	cmd.Env = append(os.Environ(), h.spec.Env...)
	tieToAgent(cmd)
	client, err := startPlugin(ctx, pluginConfig{
		cmd: cmd,
		sum: h.sum,
		// Checked as it was written, just now: not read again.
		verified: verified,
		cert:     h.r.clientCert,
		timeout:  h.r.cfg.StartTimeout,
		stderr:   h.stderrLogger(),
		stdout:   &lineWriter{stream: "stdout", tap: h.tap, log: h.log},
		errout:   &lineWriter{stream: "stderr", tap: h.tap, log: h.log},
	})
	if errors.Is(err, ErrChecksum) {
		return nil, nil, fmt.Errorf("refusing handler %q: %w", h.spec.Name, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("starting handler %q (%s): %w", h.spec.Name, h.spec.Path, err)
	}
	fail := func(what string, err error) (*proc, []TaskType, error) {
		client.close()
		return nil, nil, fmt.Errorf("%s handler %q (%s): %w", what, h.spec.Name, h.spec.Path, err)
	}
	rpc := handlerpb.NewHandlerClient(client.conn)
	desc, err := client.describe(rpc) // connecting (TLS) and its first answer, under the start's deadline
	if err != nil {
		return fail("describing", err)
	}
	if desc.GetProtocolVersion() != contract.ProtocolVersion {
		return fail("checking", fmt.Errorf("handler speaks protocol version %d, this agent speaks %d: rebuild it with a matching plugins/sdk", desc.GetProtocolVersion(), contract.ProtocolVersion))
	}
	var types []TaskType
	var ct []contract.TaskType
	for _, t := range desc.GetTypes() {
		types = append(types, TaskType{Name: t.GetName(), Version: t.GetVersion(), Concurrency: int(t.GetConcurrency()), Description: t.GetDescription(), Handler: h.spec.Name})
		ct = append(ct, contract.TaskType{Name: t.GetName(), Version: t.GetVersion(), Concurrency: int(t.GetConcurrency())})
	}
	if err := contract.ValidateTypes(ct); err != nil {
		return fail("checking", err)
	}
	p := &proc{client: client, cmd: cmd, rpc: rpc, started: time.Now(), exited: client.exited}
	times := client.times
	times.unpack = unpacked
	h.log.Info("handler started", append([]any{"pid", p.pid(), "path", h.spec.Path, "types", len(types),
		"start_ms", float64(time.Since(t0).Microseconds()) / 1000}, times.logAttrs()...)...)
	return p, types, nil
}

func (h *handler) setUp(p *proc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = p
	close(h.up)
}

// running returns the running process, or nil when there is none right now.
func (h *handler) running() *proc {
	h.mu.Lock()
	p := h.cur
	h.mu.Unlock()
	if p == nil || p.hasExited() {
		return nil
	}
	return p
}

// get returns the running process, waiting for a restart if it is down.
func (h *handler) get(ctx context.Context) (*proc, error) {
	for {
		h.mu.Lock()
		p, up, closed := h.cur, h.up, h.closed
		var a *startAttempt
		if !closed && !h.launched {
			if h.attempt == nil {
				h.attempt = &startAttempt{done: make(chan struct{})}
				h.r.wg.Add(1)
				go h.launch(h.attempt)
			}
			a = h.attempt
		}
		h.mu.Unlock()
		if closed {
			return nil, errors.New("the runner is closed")
		}
		if a != nil {
			select {
			case <-a.done:
				if a.err != nil {
					return nil, a.err
				}
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if p != nil && !p.hasExited() {
			return p, nil
		}
		if p != nil { // exited, supervisor not yet noticed
			up = nil
		}
		select {
		case <-up:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// kill ends p at once (SIGKILL); the supervisor restarts the handler.
func (h *handler) kill(p *proc, reason string) {
	p.killMu.Lock()
	if p.killReason == "" {
		p.killReason = reason
	}
	p.killMu.Unlock()
	h.log.Warn("killing handler", "pid", p.pid(), "reason", reason)
	if p.cmd.Process != nil {
		killGroup(p.cmd)
		_ = p.cmd.Process.Kill()
	}
}

// reap waits up to KillGrace for a cancelled call to end inside the handler,
// and kills the handler if it does not.
func (h *handler) reap(p *proc, callID, taskID string) {
	defer h.r.wg.Done()
	ctx, cancel := context.WithTimeout(h.r.ctx, h.r.cfg.KillGrace)
	defer cancel()
	_, err := p.rpc.WaitCall(ctx, &handlerpb.WaitCallRequest{CallId: callID})
	if err == nil || p.hasExited() || h.r.ctx.Err() != nil {
		return
	}
	h.kill(p, fmt.Sprintf("task %s was still running %v after it was cancelled", taskID, h.r.cfg.KillGrace))
}

// supervise restarts the handler whenever its process exits, with backoff.
func (h *handler) supervise(p *proc) {
	defer h.r.wg.Done()
	ctx := h.r.ctx
	backoff := h.r.cfg.RestartBackoff
	for {
		select {
		case <-p.exited:
		case <-ctx.Done():
			return
		}
		why := "exited"
		if k := p.killed(); k != "" {
			why = "killed: " + k
		} else if st := p.cmd.ProcessState; st != nil {
			why = st.String()
		}
		h.mu.Lock()
		h.cur, h.up, h.lastExit = nil, make(chan struct{}), why
		h.mu.Unlock()
		p.client.close()
		if ctx.Err() != nil {
			return
		}
		if time.Since(p.started) > time.Minute {
			backoff = h.r.cfg.RestartBackoff
		}
		h.log.Error("handler process ended; restarting", "pid", p.pid(), "reason", why, "ran", time.Since(p.started).Round(time.Millisecond), "backoff", backoff)
		for {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, h.r.cfg.RestartBackoffMax)
			np, _, err := h.start(ctx)
			if err == nil {
				h.mu.Lock()
				closed := h.closed
				h.restarts++
				h.mu.Unlock()
				if closed {
					np.client.close()
					return
				}
				h.setUp(np)
				p = np
				break
			}
			h.log.Error("restarting handler failed", "err", err, "next_backoff", backoff)
		}
	}
}
