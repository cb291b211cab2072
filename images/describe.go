package images

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paddockvm/paddock/plugins/runner"
)

// describeTimeout bounds starting one handler and asking it for its task types.
const describeTimeout = 30 * time.Second

// describe starts the handler binary at path once through plugins/runner — exactly as
// the agent starts it in the guest: checksum first, then the go-plugin handshake and
// Describe — and returns the task types it serves, sorted by name. The binary is a
// static executable for the guest, which is the build host's architecture, so it runs
// here too. A handler that does not start or describe itself is an ErrInvalid naming
// the file, with the last lines it wrote on stderr.
func describe(ctx context.Context, name, path, sum string) ([]TaskType, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("handler %q: %w", name, err)
	}
	out := &tailHandler{max: 10}
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	r, err := runner.New(ctx, runner.Config{
		Handlers:     []runner.HandlerSpec{{Name: name, Path: abs, SHA256: sum}},
		StartTimeout: describeTimeout,
		Logger:       slog.New(out),
	})
	if err != nil {
		msg := fmt.Sprintf("handler %q (%s): starting it to ask which task types it serves failed: %v", name, path, err)
		if lines := out.lines(); len(lines) > 0 {
			msg += "; its output: " + strings.Join(lines, " | ")
		}
		return nil, invalid("%s; a handler must be a plugins/sdk program (sdk.Serve) that starts without arguments on this host", msg)
	}
	defer r.Close()
	var types []TaskType
	for _, t := range r.Types() {
		types = append(types, TaskType{Name: t.Name, Version: t.Version, Concurrency: t.Concurrency})
	}
	sort.Slice(types, func(i, j int) bool { return types[i].Name < types[j].Name })
	return types, nil
}

// tailHandler is a slog.Handler that keeps the last max lines a handler process wrote
// on stderr (go-plugin logs them with the attribute plugin_log) for error messages.
type tailHandler struct {
	max int

	// mu guards buf.
	mu  sync.Mutex
	buf []string
}

var _ slog.Handler = (*tailHandler)(nil)

func (h *tailHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *tailHandler) Handle(_ context.Context, r slog.Record) error {
	fromPlugin := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "plugin_log" {
			fromPlugin = true
			return false
		}
		return true
	})
	msg := strings.TrimSpace(r.Message)
	if !fromPlugin || msg == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf = append(h.buf, msg)
	if len(h.buf) > h.max {
		h.buf = h.buf[len(h.buf)-h.max:]
	}
	return nil
}

func (h *tailHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *tailHandler) WithGroup(string) slog.Handler      { return h }

func (h *tailHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.buf...)
}
