package runner

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"
)

// HandlerSpec names one handler binary and the sha256 it must have.
type HandlerSpec struct {
	// Name identifies the handler in logs and results (e.g. "checksum").
	Name string
	// Path of the binary.
	Path string
	// Packed, when set, is a zstd- (or, in older images, gzip-) compressed copy of
	// the binary (an image's /usr/lib/paddock/handlers/<name>.zst). While Path does
	// not exist, the handler's first start unpacks Packed to Path (mode 0755) and
	// removes Packed, so a guest whose handler never runs holds only the compressed
	// bytes in its memory. The unpacked binary is checked against SHA256 as it is
	// written (that start does not read it again); later starts check it before exec.
	Packed string
	// SHA256 is the expected hex sha256 of the binary, from the image manifest.
	SHA256 string
	// Verified says the binary need not be hashed before exec: it is on a read-only
	// filesystem whose image the host checked against its manifest before attaching
	// it (an image's handler disk; images.Image.CheckHandlerDisk). Hashing it in the
	// guest would read the whole binary into guest memory on every first start.
	Verified bool
	// Args are extra command-line arguments (optional).
	Args []string
	// Env is extra environment ("K=V") for the handler (optional).
	Env []string
	// Types are the task types the handler serves as recorded when its image was built
	// (the image manifest), or nil when unknown. With Config.Lazy, a handler whose
	// types are given here is not started by New but on its first call, and on start
	// it must serve exactly these types (name and version): a handler that does not
	// is refused, as a binary with the wrong sha256 is. Each TaskType's Handler is
	// ignored (it is this handler).
	Types []TaskType
}

// Config configures a Runner. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Handlers to start. At least one.
	Handlers []HandlerSpec
	// MaxOutputBytes is the largest result (output plus named outputs) accepted
	// from a handler. Default 64 MiB.
	MaxOutputBytes int64
	// KillGrace is how long a handler may keep running a call after the call was
	// cancelled (deadline or caller) before the whole handler process is killed
	// and restarted. Default 5s.
	KillGrace time.Duration
	// RestartBackoff is the first delay before restarting a crashed handler; it
	// doubles on every crash in a row up to RestartBackoffMax. Defaults 100ms, 30s.
	RestartBackoff, RestartBackoffMax time.Duration
	// MaxTaskLogBytes bounds the log lines kept of one call (Result.Logs): the
	// oldest are dropped beyond it. Default 1 MiB.
	MaxTaskLogBytes int64
	// StartTimeout bounds a handler's start (exec until its Describe answers: the
	// handshake line, the TLS connection, the first call), counted while its process
	// uses no CPU: a start that keeps using CPU (a guest starved of CPU starts its
	// handlers slowly) is waited for up to 10 StartTimeouts in all. Default 1 min.
	StartTimeout time.Duration
	// Logger receives the runner's and the handlers' logs. Default slog.Default().
	Logger *slog.Logger
	// Lazy starts each handler whose HandlerSpec.Types are known on its first call
	// instead of in New: New then returns at once with the declared types (the agent
	// registers without waiting for any handler), and an idle guest holds no handler
	// process that was never used. The first call of a type pays for the handler's
	// start (sha256 check, exec, handshake). Handlers without declared types start in
	// New, in parallel.
	Lazy bool
}

// DefaultConfig returns the defaults (without handlers).
func DefaultConfig() Config {
	return Config{
		MaxOutputBytes:    64 << 20,
		KillGrace:         5 * time.Second,
		RestartBackoff:    100 * time.Millisecond,
		RestartBackoffMax: 30 * time.Second,
		StartTimeout:      time.Minute,
		MaxTaskLogBytes:   1 << 20,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = d.MaxOutputBytes
	}
	if c.KillGrace == 0 {
		c.KillGrace = d.KillGrace
	}
	if c.RestartBackoff == 0 {
		c.RestartBackoff = d.RestartBackoff
	}
	if c.RestartBackoffMax == 0 {
		c.RestartBackoffMax = d.RestartBackoffMax
	}
	if c.MaxTaskLogBytes == 0 {
		c.MaxTaskLogBytes = d.MaxTaskLogBytes
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first invalid field, naming it.
func (c Config) Validate() error {
	if len(c.Handlers) == 0 {
		return errors.New("runner config: Handlers is empty: list at least one handler binary")
	}
	names := map[string]bool{}
	for i, h := range c.Handlers {
		switch {
		case h.Name == "":
			return fmt.Errorf("runner config: Handlers[%d].Name is empty", i)
		case names[h.Name]:
			return fmt.Errorf("runner config: Handlers[%d].Name %q is used twice", i, h.Name)
		case h.Path == "":
			return fmt.Errorf("runner config: handler %q: Path is empty", h.Name)
		case !filepath.IsAbs(h.Path):
			return fmt.Errorf("runner config: handler %q: Path %q is not absolute", h.Name, h.Path)
		case h.Packed != "" && (!filepath.IsAbs(h.Packed) || h.Packed == h.Path):
			return fmt.Errorf("runner config: handler %q: Packed %q must be an absolute path other than Path (the image manifest's packed)", h.Name, h.Packed)
		}
		if b, err := hex.DecodeString(h.SHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("runner config: handler %q: SHA256 %q is not 64 hex digits (take it from the image manifest, or `sha256sum %s`)", h.Name, h.SHA256, h.Path)
		}
		names[h.Name] = true
		seenTypes := map[string]bool{}
		for j, t := range h.Types {
			if t.Name == "" || seenTypes[t.Name] {
				return fmt.Errorf("runner config: handler %q: Types[%d] has an empty or repeated name %q (take the types from the image manifest)", h.Name, j, t.Name)
			}
			seenTypes[t.Name] = true
		}
	}
	switch {
	case c.MaxOutputBytes < 0:
		return fmt.Errorf("runner config: MaxOutputBytes %d is negative", c.MaxOutputBytes)
	case c.MaxTaskLogBytes < 0:
		return fmt.Errorf("runner config: MaxTaskLogBytes %d is negative", c.MaxTaskLogBytes)
	case c.KillGrace < 0:
		return fmt.Errorf("runner config: KillGrace %v is negative", c.KillGrace)
	case c.RestartBackoff < 0 || c.RestartBackoffMax < 0:
		return errors.New("runner config: RestartBackoff and RestartBackoffMax must not be negative")
	}
	return nil
}
