package sched

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
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
	// VouchedTimeout (server.vouched_timeout) is how long a guest's agent, relayed by
	// its host daemon, may stay silent past AgentTimeout while that host vouches for the
	// guest: its control stream is up, its latest Status lists the guest and the
	// guest's CPU time went on rising (a guest starved of CPU on a busy host, not a dead
	// one). Meanwhile the agent's session stays open and its leases are renewed; past it,
	// the session is closed as for any silent agent. A guest the host reports gone ends
	// at once as before. Default 60s (off when AgentTimeout is longer); negative: off.
	VouchedTimeout time.Duration
	// LeaseTTL is how long a lease lasts without a renewing heartbeat. Default 10s.
	LeaseTTL time.Duration
	// MaxInlineBytes bounds a task's payload plus inputs, and its outputs. Default 4 MiB.
	MaxInlineBytes int
	// DefaultTimeout is a task's timeout when it gives none. Default 10 min.
	DefaultTimeout time.Duration
	// ScheduleToStartTimeout (server.schedule_to_start_timeout) is a task's
	// schedule-to-start timeout when it gives none (TaskSpec.schedule_to_start_timeout_ms):
	// a task never started this long after its submission fails with kind
	// SCHEDULE_TIMEOUT. 0: off (the default).
	ScheduleToStartTimeout time.Duration
	// DefaultMaxAttempts is a task's max attempts when it gives none. Default 3.
	DefaultMaxAttempts int
	// RetryBase and RetryMax bound the exponential retry backoff (with jitter).
	// Defaults 1s and 5 min.
	RetryBase, RetryMax time.Duration
	// TimeoutGrace is how long past its timeout a running task keeps its lease. Default 10s.
	TimeoutGrace time.Duration
	// Blobs is the blob store (server.blob_store): task input and output blobs, the
	// /v1/blobs HTTP API on the client port, the hosts' and agents' blob RPCs. Nil:
	// every blob feature is refused with an error naming server.blob_store.
	Blobs blob.Store
	// BlobRetention (server.blob_retention) is how long a blob no task uses is kept
	// after it was written; blobs of tasks that finished within it are kept too.
	// Default 24h.
	BlobRetention time.Duration
	// TaskRetention (server.task_retention.<state>) is how long finished tasks are kept
	// after they finished, by final state (succeeded, failed, cancelled, dead); then
	// they and their attempts are deleted. A state not in the map takes
	// DefaultTaskRetention's; 0 keeps that state's tasks forever. A deleted task's
	// idempotency key can be used again.
	TaskRetention map[store.State]time.Duration
	// MaxOutputBytes (server.max_output_bytes) bounds the sum of one task's output
	// blobs. Default 64 GiB.
	MaxOutputBytes int64
	// MaxBlobBytes bounds one uploaded blob (PUT /v1/blobs, host and agent WriteBlob);
	// 0: no limit.
	MaxBlobBytes int64
	// AgentIdleTimeout closes an agent-port connection that runs no RPC this long (one
	// that never opens a Session). Default 2 min.
	AgentIdleTimeout time.Duration
	// ReplicaID names this server among the replicas sharing one store (server.replica_id):
	// it is logged at start and shown with each agent's and host's session. Default: the
	// host name and a random suffix, new at each start.
	ReplicaID string
	// SyncInterval (replicas only: a store.Shared store) is how often the server looks
	// in the store for what other replicas changed about its agents' tasks and may not
	// have woken it for (a cancel, a lease another replica expired), and how often a
	// client's Wait re-reads its task. Default 2 heartbeat intervals.
	SyncInterval time.Duration
	// OnlineSLA (server.online_sla.<type>) is the target submit→start latency of online
	// tasks, by task type; the key "*" applies to types not listed. /metrics counts the
	// online starts that met and missed it (paddock_online_starts_total{type,sla}).
	// Default: "*" 1s.
	OnlineSLA map[string]time.Duration
	// LocalityDelay (server.locality_delay) is how long a ready task with input blobs
	// waits for a free slot on a host whose cache holds its inputs before it takes any
	// free slot (delay scheduling; longer while the free slot's host would take longer
	// to fetch the inputs, never more than 20 delays: locality.go). Default 500ms;
	// negative: off (place by load only).
	LocalityDelay time.Duration
	// Tenants (config tenants.<name>.weight, max_running, max_queued) are the
	// per-tenant limits and shares of slots; tenants not in it have weight 1 and no
	// limits.
	Tenants tenant.Config
	// Prices (server.prices.cpu_second, gib_second, gib_moved) price usage; without
	// them usage is reported without cost.
	Prices tenant.Prices
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// DefaultOnlineSLA is the target submit→start latency of online tasks of a type
// OnlineSLA does not name.
const DefaultOnlineSLA = time.Second

// onlineSLA is the target submit→start latency of online tasks of typ.
func (c Config) onlineSLA(typ string) time.Duration {
	if d, ok := c.OnlineSLA[typ]; ok {
		return d
	}
	if d, ok := c.OnlineSLA["*"]; ok {
		return d
	}
	return DefaultOnlineSLA
}

// validateSLA checks OnlineSLA.
func (c Config) validateSLA() error {
	for typ, d := range c.OnlineSLA {
		if d <= 0 {
			return fmt.Errorf("server config: online SLA (server.online_sla.%s) %v: give a positive submit-to-start target such as 500ms", typ, d)
		}
		if typ != "*" && !typeRE.MatchString(typ) {
			return fmt.Errorf("server config: online SLA (server.online_sla): %q is not a task type name (or \"*\" for every other type)", typ)
		}
	}
	return nil
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
		BlobRetention:      24 * time.Hour,
		MaxOutputBytes:     64 << 30,
		LocalityDelay:      500 * time.Millisecond,
		VouchedTimeout:     time.Minute,
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
	if c.VouchedTimeout == 0 {
		c.VouchedTimeout = d.VouchedTimeout
		if c.VouchedTimeout <= c.AgentTimeout {
			c.VouchedTimeout = -1 // the agent timeout alone is already longer
		}
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
	if c.BlobRetention == 0 {
		c.BlobRetention = d.BlobRetention
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = d.MaxOutputBytes
	}
	if c.LocalityDelay == 0 {
		c.LocalityDelay = d.LocalityDelay
	}
	if c.AgentIdleTimeout == 0 {
		c.AgentIdleTimeout = 2 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 2 * c.HeartbeatInterval
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
	case c.ScheduleToStartTimeout < 0 || c.ScheduleToStartTimeout > MaxTimeout:
		return fmt.Errorf("server config: schedule-to-start timeout (server.schedule_to_start_timeout) %v is out of range: give a duration such as 5m (at most %v), or 0 for none", c.ScheduleToStartTimeout, MaxTimeout)
	case c.BlobRetention < 0:
		return fmt.Errorf("server config: blob retention (server.blob_retention) %v is negative: give a duration such as 24h", c.BlobRetention)
	case c.validateRetention() != nil:
		return c.validateRetention()
	case c.MaxOutputBytes < 0:
		return fmt.Errorf("server config: max output bytes (server.max_output_bytes) %d is negative", c.MaxOutputBytes)
	case c.AgentIdleTimeout < 0:
		return fmt.Errorf("server config: agent idle timeout %v is negative", c.AgentIdleTimeout)
	case c.ReplicaID != "" && !replicaRE.MatchString(c.ReplicaID):
		return fmt.Errorf("server config: replica id (server.replica_id) %q: use 1-64 letters, digits, '.', '_' or '-'", c.ReplicaID)
	case c.SyncInterval < 0:
		return fmt.Errorf("server config: sync interval %v is negative", c.SyncInterval)
	case c.validateSLA() != nil:
		return c.validateSLA()
	case c.VouchedTimeout > time.Hour:
		return fmt.Errorf("server config: vouched timeout (server.vouched_timeout) %v is over an hour: a hung agent would hold its tasks that long; use e.g. 60s, or 0 for off", c.VouchedTimeout)
	case c.VouchedTimeout > 0 && c.VouchedTimeout < c.AgentTimeout:
		return fmt.Errorf("server config: vouched timeout (server.vouched_timeout) %v is shorter than the agent timeout %v (5 heartbeats): it would never apply; give at least %v, or 0 for off", c.VouchedTimeout, c.AgentTimeout, c.AgentTimeout)
	case c.LocalityDelay > time.Hour:
		return fmt.Errorf("server config: locality delay (server.locality_delay) %v is over an hour: tasks would wait that long for a host holding their inputs; use e.g. 500ms, or 0 for off", c.LocalityDelay)
	case c.Tenants.Validate() != nil:
		return fmt.Errorf("server config: %w", c.Tenants.Validate())
	case c.Prices.Validate() != nil:
		return fmt.Errorf("server config: %w", c.Prices.Validate())
	case c.MaxBlobBytes < 0:
		return fmt.Errorf("server config: max blob bytes %d is negative: use 0 for no limit", c.MaxBlobBytes)
	}
	return nil
}
