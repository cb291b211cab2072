package sched

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Config configures a Server. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Version is reported to agents and clients.
	Version string
	// Dev turns off client authentication (no bearer token needed).
	Dev bool
	// Token is the bearer token clients must send outside dev mode.
	Token string
	// AgentToken, when set, is the bearer token agents must send.
	AgentToken string
	// HeartbeatInterval is how often agents heartbeat. Default 1s.
	HeartbeatInterval time.Duration
	// AgentTimeout: an agent silent this long is lost. Default 5 heartbeats.
	AgentTimeout time.Duration
	// LeaseTTL is how long a lease lasts without a renewing heartbeat. Default 10s.
	LeaseTTL time.Duration
	// MaxInlineBytes bounds a task's payload plus inputs, and its outputs. Default 4 MiB.
	MaxInlineBytes int
	// DefaultTimeout is a task's timeout when it gives none. Default 10 min.
	DefaultTimeout time.Duration
	// DefaultMaxAttempts is a task's max attempts when it gives none. Default 3.
	DefaultMaxAttempts int
	// RetryBase and RetryMax bound the exponential retry backoff (with jitter).
	// Defaults 1s and 5 min.
	RetryBase, RetryMax time.Duration
	// TimeoutGrace is how long past its timeout a running task keeps its lease. Default 10s.
	TimeoutGrace time.Duration
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval:  time.Second,
		LeaseTTL:           10 * time.Second,
		MaxInlineBytes:     4 << 20,
		DefaultTimeout:     10 * time.Minute,
		DefaultMaxAttempts: 3,
		RetryBase:          time.Second,
		RetryMax:           5 * time.Minute,
		TimeoutGrace:       10 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.AgentTimeout == 0 {
		c.AgentTimeout = 5 * c.HeartbeatInterval
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.MaxInlineBytes == 0 {
		c.MaxInlineBytes = d.MaxInlineBytes
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = d.DefaultTimeout
	}
	if c.DefaultMaxAttempts == 0 {
		c.DefaultMaxAttempts = d.DefaultMaxAttempts
	}
	if c.RetryBase == 0 {
		c.RetryBase = d.RetryBase
	}
	if c.RetryMax == 0 {
		c.RetryMax = d.RetryMax
	}
	if c.TimeoutGrace == 0 {
		c.TimeoutGrace = d.TimeoutGrace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	return c
}

// Validate reports the first invalid field, naming it.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case !c.Dev && c.Token == "":
		return errors.New("server config: no client token (server.token): set one, or run in dev mode (--dev) to accept unauthenticated clients")
	case c.HeartbeatInterval < 0 || c.AgentTimeout < 0 || c.LeaseTTL < 0:
		return errors.New("server config: heartbeat interval, agent timeout and lease TTL must be positive")
	case c.LeaseTTL <= c.HeartbeatInterval:
		return fmt.Errorf("server config: lease TTL %v must be longer than the heartbeat interval %v", c.LeaseTTL, c.HeartbeatInterval)
	case c.MaxInlineBytes < 0:
		return fmt.Errorf("server config: max inline bytes %d is negative", c.MaxInlineBytes)
	case c.RetryBase < 0 || c.RetryMax < c.RetryBase:
		return fmt.Errorf("server config: retry backoff base %v / max %v: need 0 <= base <= max", c.RetryBase, c.RetryMax)
	}
	return nil
}
