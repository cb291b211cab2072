package cache

import (
	"errors"
	"fmt"
	"log/slog"
)

// Policy names (Config.Policy).
const (
	PolicyLRU  = "lru"
	PolicyLRFU = "lrfu"
)

// Read policies (Config.ReadPolicy).
const (
	// ReadCache: a miss is fetched into the disk tier (and, when small enough, the memory
	// tier too).
	ReadCache = "cache"
	// ReadNoCache: a miss is fetched straight to the caller's destination and not kept.
	ReadNoCache = "no-cache"
	// ReadPromote: as ReadCache, and a disk hit of a blob small enough for the memory tier
	// is promoted into it.
	ReadPromote = "promote"
)

// Write policies (Config.WritePolicy).
const (
	// WriteThrough: Ingest uploads to the Sink before it returns.
	WriteThrough = "through"
	// WriteAsync: Ingest journals the blob and returns; Run uploads it.
	WriteAsync = "async"
)

// Config configures a Cache. The comment of each field names its configuration key.
type Config struct {
	// Dir (host.cache_dir) holds the disk tier (blobs/sha256/…), downloads in progress
	// (tmp/) and the journal of pending uploads (pending/). It must be on the same
	// filesystem as the guests' directories, or Link copies instead of hard-linking.
	Dir string
	// MemoryBytes (host.cache_memory_bytes) is the memory tier's budget; 0 disables it. A
	// blob larger than MemoryBytes/8 never enters the memory tier.
	MemoryBytes int64
	// DiskBytes (host.cache_disk_bytes) is the disk tier's budget.
	DiskBytes int64
	// Policy (host.cache_policy) is the eviction policy of both tiers: "lru" or "lrfu".
	Policy string
	// Lambda (host.cache_lrfu_lambda) is LRFU's λ in [0, 1], per reference: near 0 it
	// behaves like LFU, at 1 like LRU.
	Lambda float64
	// ReadPolicy (host.cache_read_policy): "cache", "no-cache" or "promote".
	ReadPolicy string
	// WritePolicy (host.cache_write_policy): "through" or "async".
	WritePolicy string
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: 64 MiB of memory, 20 GiB of disk, LRU (λ 0.1 for
// LRFU), read policy "cache", write policy "through". Dir has no default here: the host
// daemon puts it under its data directory.
func DefaultConfig() Config {
	return Config{
		MemoryBytes: 64 << 20,
		DiskBytes:   20 << 30,
		Policy:      PolicyLRU,
		Lambda:      0.1,
		ReadPolicy:  ReadCache,
		WritePolicy: WriteThrough,
	}
}

// Validate checks cfg; each error names the configuration key and the fix.
func (cfg Config) Validate() error {
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("host.cache_dir is empty: set it to a directory on the same filesystem as the guests' directories (default <data_dir>/cache)"))
	}
	if cfg.MemoryBytes < 0 {
		errs = append(errs, fmt.Errorf("host.cache_memory_bytes is %d: give 0 (no memory tier) or a positive byte count, e.g. 67108864 (64 MiB)", cfg.MemoryBytes))
	}
	if cfg.DiskBytes <= 0 {
		errs = append(errs, fmt.Errorf("host.cache_disk_bytes is %d: give a positive byte count, e.g. 21474836480 (20 GiB)", cfg.DiskBytes))
	}
	switch cfg.Policy {
	case PolicyLRU, PolicyLRFU:
	default:
		errs = append(errs, fmt.Errorf("host.cache_policy is %q: use %q or %q", cfg.Policy, PolicyLRU, PolicyLRFU))
	}
	if !(cfg.Lambda >= 0 && cfg.Lambda <= 1) { // also refuses NaN
		errs = append(errs, fmt.Errorf("host.cache_lrfu_lambda is %v: give a number from 0 (like LFU) to 1 (like LRU), e.g. 0.1", cfg.Lambda))
	}
	switch cfg.ReadPolicy {
	case ReadCache, ReadNoCache, ReadPromote:
	default:
		errs = append(errs, fmt.Errorf("host.cache_read_policy is %q: use %q, %q or %q", cfg.ReadPolicy, ReadCache, ReadNoCache, ReadPromote))
	}
	switch cfg.WritePolicy {
	case WriteThrough, WriteAsync:
	default:
		errs = append(errs, fmt.Errorf("host.cache_write_policy is %q: use %q or %q", cfg.WritePolicy, WriteThrough, WriteAsync))
	}
	return errors.Join(errs...)
}
