package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/viper"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/s3store"
	"github.com/paddockvm/paddock/hostd/bwshare"
	"github.com/paddockvm/paddock/hostd/cache"
	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/sched"
)

// The data plane's configuration keys (docs/dataplane.md): where the server keeps blobs,
// and the host daemon's cache. Byte sizes take a plain number of bytes or a unit
// (64MiB, 20GiB, 1.5GB).

// serverBlobKeys are registered by server.go after the other server.* keys.
var serverBlobKeys = []config.Key{
	{Name: "server.blob_store", Default: "fs", Usage: "where the server keeps blobs (task inputs and outputs of any size): fs (a directory, server.blob_dir) or s3 (server.s3_*)", OneOf: []string{"fs", "s3"}},
	{Name: "server.blob_dir", Default: "", Usage: "directory of the fs blob store (empty: <data_dir>/blobs)"},
	{Name: "server.blob_reserve", Default: "256MiB", Usage: "free space an upload to the fs blob store never takes from its disk (by default the task database's disk too): an upload that would leave less is refused, nothing stored (bytes, or with a unit; 0: none)", Check: checkByteSize},
	{Name: "server.s3_endpoint", Default: "", Usage: "S3 endpoint URL for server.blob_store s3, e.g. https://s3.eu-west-1.amazonaws.com or http://minio:9000 (empty: AWS for server.s3_region)"},
	{Name: "server.s3_bucket", Default: "", Usage: "S3 bucket of the blob store (required for server.blob_store s3)"},
	{Name: "server.s3_region", Default: "", Usage: "S3 region (empty: us-east-1 with server.s3_endpoint, else the AWS default chain)"},
	{Name: "server.s3_prefix", Default: "", Usage: "key prefix of the blobs in the bucket, e.g. paddock/"},
	{Name: "server.s3_access_key", Default: "", Usage: "S3 access key id (empty: the AWS default chain: environment, shared config, instance role)"},
	{Name: "server.s3_secret_key", Default: "", Usage: "S3 secret access key (prefer PADDOCK_SERVER_S3_SECRET_KEY to this file)"},
	{Name: "server.s3_path_style", Default: false, Usage: "S3 path-style addressing (endpoint/bucket/key), as MinIO and most self-hosted S3 servers need"},
	{Name: "server.blob_retention", Default: 24 * time.Hour, Usage: "how long a blob no task uses is kept after it was written; blobs of tasks that finished within it are kept too"},
	{Name: "server.max_output_bytes", Default: "64GiB", Usage: "most bytes of output files one task may write (bytes, or with a unit: 64GiB)", Check: checkByteSize},
	{Name: "server.max_blob_bytes", Default: "0", Usage: "largest blob the server accepts on upload (0: no limit; bytes, or with a unit: 10GiB)", Check: checkByteSize},
}

// hostCacheKeys are registered by host.go after the other host.* keys.
var hostCacheKeys = []config.Key{

	{Name: "host.cache_dir", Default: "", Usage: "the host blob cache's disk tier; must be on the filesystem of host.run_dir, as inputs are hard-linked into guests (empty: <data_dir>/cache)"},
	{Name: "host.cache_memory_bytes", Default: "64MiB", Usage: "memory tier of the host blob cache (bytes, or with a unit; 0: none)", Check: checkByteSize},
	{Name: "host.cache_disk_bytes", Default: "20GiB", Usage: "disk tier of the host blob cache (bytes, or with a unit); blobs in use by a guest stay until their task ends", Check: checkByteSize},
	{Name: "host.cache_policy", Default: "lru", Usage: "host cache eviction: lru (least recently used) or lrfu (weighs recency and frequency by host.cache_lrfu_lambda)"},
	{Name: "host.cache_lrfu_lambda", Default: 0.1, Usage: "LRFU's lambda, from 0 (behaves as LFU) to 1 (as LRU)"},
	{Name: "host.cache_read_policy", Default: "cache", Usage: "blobs read from the server: cache (kept on disk), no-cache (staged, then dropped) or promote (also kept in memory)"},
	{Name: "host.cache_write_policy", Default: "through", Usage: "task outputs: through (uploaded before the task succeeds) or async (journaled on the host's disk, uploaded after; faster, lost if the host's disk is)"},
	{Name: "host.bandwidth", Default: "", Usage: "link capacity the host's blob transfers (fetches into its cache, output uploads) share, e.g. 90MB/s or 1GiB/s (empty: not shaped, only counted)", Check: checkRate},
	{Name: "host.bandwidth_classes", Default: map[string]any{}, Usage: "bandwidth classes by name (a tenant, online, batch, default): {min: <rate, e.g. 10MB/s>, weight: <number > 0>}; each active class gets its min, the rest of host.bandwidth is shared by weight"},
	{Name: "host.peer_fetch", Default: false, Usage: "fetch a blob from a peer host (host.peers) that caches it when that peer is not slower than the server; falls back to the server when the peer fails"},
	{Name: "host.peers", Default: []string{}, Usage: "peer hosts for host.peer_fetch: the URLs of their host.peer_listen, e.g. [http://host2:7074]"},
	{Name: "host.peer_listen", Default: "", Usage: "address where this host serves its cached blobs to peer hosts, read-only, plain HTTP without authentication: bind it to a private network (empty: not served)"},
}

// rateForm is the form of a rate key's value.
const rateForm = "want a rate in bytes per second with a unit and /s, such as 90MB/s or 1GiB/s"

// checkRate is the config.Key Check of host.bandwidth.
func checkRate(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	if _, err := bwshare.ParseRate("", s); err != nil {
		return errors.New(rateForm + " (above 0); leave it empty not to shape transfers")
	}
	return nil
}

// hostBandwidthConfig reads host.bandwidth and host.bandwidth_classes.
func hostBandwidthConfig(v *viper.Viper) (bwshare.Config, error) {
	var cfg bwshare.Config
	if s := strings.TrimSpace(v.GetString("host.bandwidth")); s != "" {
		r, err := bwshare.ParseRate("host.bandwidth", s)
		if err != nil {
			return cfg, fmt.Errorf("%w; leave it empty not to shape transfers", err)
		}
		cfg.Capacity = r
	}
	raw := v.GetStringMap("host.bandwidth_classes")
	if len(raw) > 0 {
		cfg.Classes = map[string]bwshare.Class{}
	}
	var errs []error
	for name, val := range raw {
		key := "host.bandwidth_classes." + name
		m, ok := val.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s = %v: want {min: 10MB/s, weight: 1}", key, val))
			continue
		}
		c := bwshare.Class{Weight: 1}
		for k, x := range m {
			switch k {
			case "min":
				s := strings.TrimSpace(fmt.Sprint(x))
				if s == "0" {
					continue
				}
				r, err := bwshare.ParseRate(key+".min", s)
				if err != nil {
					errs = append(errs, fmt.Errorf("%w, or 0", err))
				}
				c.Min = r
			case "weight":
				w, err := strconv.ParseFloat(strings.TrimSpace(fmt.Sprint(x)), 64)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.weight %q: want a number above 0, such as 1", key, fmt.Sprint(x)))
					continue
				}
				c.Weight = w
			default:
				errs = append(errs, fmt.Errorf("%s.%s: unknown key: a class takes min and weight", key, k))
			}
		}
		cfg.Classes[name] = c
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// byteSize reads key as a byte count: an integer, or a number with a unit ("64MiB",
// "20GiB", "1.5GB"). The error names the key and the form.
func byteSize(v *viper.Viper, key string) (int64, error) {
	s := strings.TrimSpace(v.GetString(key))
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("%s %d: want 0 or more bytes, e.g. 64MiB", key, n)
		}
		return n, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want bytes, or a number with a unit such as 64MiB or 20GiB", key, s)
	}
	return n, nil
}

// checkByteSize is the config.Key Check of byte-size keys.
func checkByteSize(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
		if n < 0 {
			return errors.New("want 0 or more bytes")
		}
		return nil
	}
	if _, err := parseSize(strings.TrimSpace(s)); err != nil {
		return errors.New("want bytes, or a number with a unit such as 64MiB or 20GiB")
	}
	return nil
}

// parseSize parses "64MiB", "1GiB", "1.5GB", "4096" into bytes.
func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, err
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("%s is too large", s)
	}
	return int64(n), nil
}

// oneOf checks that key's value is one of allowed.
func oneOf(v *viper.Viper, key string, allowed ...string) (string, error) {
	s := v.GetString(key)
	for _, a := range allowed {
		if s == a {
			return s, nil
		}
	}
	return "", fmt.Errorf("%s %q: use %s", key, s, strings.Join(allowed, " or "))
}

// serverBlobs are the server's data-plane settings read from the server.* keys.
type serverBlobs struct {
	Store          blob.Store
	Retention      time.Duration
	MaxOutputBytes int64
	MaxBlobBytes   int64
}

// openServerBlobs opens the blob store server.blob_store names and reads the limits.
// dataDir is the server's data directory (the fs store's default parent).
func openServerBlobs(ctx context.Context, v *viper.Viper, dataDir string) (serverBlobs, error) {
	var sb serverBlobs
	var err error
	if sb.MaxOutputBytes, err = byteSize(v, "server.max_output_bytes"); err != nil {
		return sb, err
	}
	if sb.MaxBlobBytes, err = byteSize(v, "server.max_blob_bytes"); err != nil {
		return sb, err
	}
	if sb.MaxOutputBytes == 0 {
		return sb, fmt.Errorf("server.max_output_bytes 0: give tasks room for their output files, e.g. 64GiB")
	}
	if sb.Retention = v.GetDuration("server.blob_retention"); sb.Retention <= 0 {
		return sb, fmt.Errorf("server.blob_retention %q: give a positive duration such as 24h (8760h keeps unused blobs for a year)", v.GetString("server.blob_retention"))
	}
	kind, err := oneOf(v, "server.blob_store", "fs", "s3")
	if err != nil {
		return sb, err
	}
	switch kind {
	case "fs":
		dir := v.GetString("server.blob_dir")
		if dir == "" {
			dir = filepath.Join(dataDir, "blobs")
		}
		reserve, err := byteSize(v, "server.blob_reserve")
		if err != nil {
			return sb, err
		}
		fs, err := blob.OpenFS(dir)
		if err != nil {
			return sb, fmt.Errorf("server.blob_dir %s: %w", dir, err)
		}
		fs.SetReserve(reserve)
		sb.Store = fs
	case "s3":
		cfg := s3store.Config{Endpoint: v.GetString("server.s3_endpoint"), Bucket: v.GetString("server.s3_bucket"), Region: v.GetString("server.s3_region"),
			Prefix: v.GetString("server.s3_prefix"), AccessKey: v.GetString("server.s3_access_key"), SecretKey: v.GetString("server.s3_secret_key"),
			PathStyle: v.GetBool("server.s3_path_style")}
		st, err := s3store.New(ctx, cfg)
		if err != nil {
			return sb, fmt.Errorf("server.blob_store s3: %w", err)
		}
		sb.Store = st
	}
	return sb, nil
}

// apply sets cfg's blob fields.
func (sb serverBlobs) apply(cfg *sched.Config) {
	cfg.Blobs, cfg.BlobRetention, cfg.MaxOutputBytes, cfg.MaxBlobBytes = sb.Store, sb.Retention, sb.MaxOutputBytes, sb.MaxBlobBytes
}

// hostCacheConfig reads the host.cache_* keys; dataDir is the host's data directory
// (the cache's default parent) and runDir holds the guests' directories.
func hostCacheConfig(v *viper.Viper, dataDir, runDir string, log *slog.Logger) (cache.Config, error) {
	c := cache.DefaultConfig()
	c.Dir = v.GetString("host.cache_dir")
	if c.Dir == "" {
		c.Dir = filepath.Join(dataDir, "cache")
	}
	var err error
	if c.MemoryBytes, err = byteSize(v, "host.cache_memory_bytes"); err != nil {
		return c, err
	}
	if c.DiskBytes, err = byteSize(v, "host.cache_disk_bytes"); err != nil {
		return c, err
	}
	c.Policy = v.GetString("host.cache_policy")
	c.Lambda = v.GetFloat64("host.cache_lrfu_lambda")
	c.ReadPolicy = v.GetString("host.cache_read_policy")
	c.WritePolicy = v.GetString("host.cache_write_policy")
	c.Logger = log
	if err := c.Validate(); err != nil {
		return c, err
	}
	if log != nil {
		if same, a, b := sameFS(c.Dir, runDir); !same {
			log.Warn("host.cache_dir and host.run_dir are on different filesystems: inputs are copied into guests instead of hard-linked; put both on one filesystem",
				"cache_dir", a, "run_dir", b)
		}
	}
	return c, nil
}

// sameFS reports whether a and b (or their nearest existing ancestors) are on one
// filesystem; it answers true when it cannot tell.
func sameFS(a, b string) (bool, string, string) {
	dev := func(p string) (uint64, string, bool) {
		for p = filepath.Clean(p); ; p = filepath.Dir(p) {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err == nil {
				return uint64(st.Dev), p, true
			} else if !os.IsNotExist(err) || p == filepath.Dir(p) {
				return 0, p, false
			}
		}
	}
	da, pa, oka := dev(a)
	db, pb, okb := dev(b)
	return !oka || !okb || da == db, pa, pb
}
