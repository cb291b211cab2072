package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/blob"
)

// Source is where misses come from: the server, over the cluster port.
type Source interface {
	// Open returns the blob's bytes from offset to its end. Errors wrapping
	// blob.ErrNotFound or blob.ErrInvalid are not retried.
	Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error)
	// Stat returns the blob's size (Link calls it when not given the size).
	Stat(ctx context.Context, d blob.Digest) (blob.Info, error)
}

// Sink is where outputs go: the server, over the cluster port.
type Sink interface {
	// Put stores the size bytes of r as blob d. An error is retried later (async) or
	// returned by Ingest (through).
	Put(ctx context.Context, d blob.Digest, size int64, r io.Reader) error
}

// ErrFull is the class of errors that say the disk tier cannot take a blob: its budget
// (host.cache_disk_bytes) is held by blobs in use or waiting for upload, or the disk of
// host.cache_dir is full. Such errors also wrap blob.ErrUnavailable: retry later. The
// message says what to do.
var ErrFull = errors.New("host cache full")

// verifyAtOpenMax: Open hashes files up to this size; larger ones are hashed before
// their first use. A variable for tests.
var verifyAtOpenMax int64 = 4 << 20

// Cache is the host's tiered blob cache. It is safe for concurrent use.
type Cache struct {
	cfg        Config
	src        Source
	sink       Sink
	log        *slog.Logger
	met        *metrics
	lockFile   *os.File
	blobsDir   string
	tmpDir     string
	pendingDir string
	memMax     int64 // the largest blob the memory tier takes
	wake       chan struct{}
	changes    chan struct{} // Changes: the set Largest lists changed (coalesced)
	// retryMin and retryMax bound the backoff between upload attempts; fetchRetry the
	// first pause between attempts to resume a cut download.
	retryMin, retryMax time.Duration
	fetchRetry         time.Duration

	// mu guards the fields below, and every change of the disk tier's files (a rename
	// into blobs/, an eviction's remove), so the index and the files agree.
	mu      sync.Mutex
	clock   int64
	disk    tier
	mem     tier
	files   map[blob.Digest]*diskEntry
	blobs   map[blob.Digest]*memEntry
	flights map[blob.Digest]*flight
	pending map[blob.Digest]*upload
}

// diskEntry is one blob file of the disk tier.
type diskEntry struct {
	size     int64
	pins     int  // users (links, reads, uploads, a flight): not evicted while > 0
	verified bool // its hash was checked since Open (or it was written by this process)
	checking bool // a peer's request started hashing it (PeerStore)
	pending  bool // journaled output not yet uploaded: never evicted
}

// memEntry is one blob of the memory tier.
type memEntry struct {
	data []byte
	pins int
}

// upload is one pending output's retry state.
type upload struct {
	size     int64
	attempts int
	next     time.Time
}

// journal is the content of <Dir>/pending/<hex>.
type journal struct {
	Digest blob.Digest `json:"digest"`
	Size   int64       `json:"size"`
	Since  time.Time   `json:"since"`
}

// Open opens (creating as needed) the cache in cfg.Dir, with misses fetched from src and
// outputs uploaded to sink, its metrics registered with reg (nil: not registered).
//
// It rebuilds the disk tier's index from <Dir>/blobs: files up to 4 MiB are hashed now,
// larger ones before their first use (Link, Ingest, upload); a corrupt or misplaced
// file is removed with a warning. Leftovers in <Dir>/tmp (downloads or ingests cut by
// a restart) are removed with a warning. Pending uploads journaled in <Dir>/pending are
// resumed by Run. A second Cache on the same Dir fails (the directory is locked).
func Open(cfg Config, src Source, sink Sink, reg prometheus.Registerer) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, errors.New("host cache: no Source to fetch misses from")
	}
	if sink == nil {
		return nil, errors.New("host cache: no Sink to upload outputs to")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cache{
		cfg: cfg, src: src, sink: sink, log: cfg.Logger.With("component", "cache"),
		blobsDir:   filepath.Join(cfg.Dir, "blobs", "sha256"),
		tmpDir:     filepath.Join(cfg.Dir, "tmp"),
		pendingDir: filepath.Join(cfg.Dir, "pending"),
		memMax:     cfg.MemoryBytes / 8,
		wake:       make(chan struct{}, 1),
		changes:    make(chan struct{}, 1),
		retryMin:   time.Second, retryMax: 5 * time.Minute, fetchRetry: 100 * time.Millisecond,
		files: map[blob.Digest]*diskEntry{}, blobs: map[blob.Digest]*memEntry{},
		flights: map[blob.Digest]*flight{}, pending: map[blob.Digest]*upload{},
	}
	var err error
	if c.disk.pol, err = NewPolicy(cfg.Policy, cfg.Lambda); err != nil {
		return nil, err
	}
	if c.mem.pol, err = NewPolicy(cfg.Policy, cfg.Lambda); err != nil {
		return nil, err
	}
	c.disk.name, c.disk.budget = TierDisk, cfg.DiskBytes
	c.mem.name, c.mem.budget = TierMemory, cfg.MemoryBytes
	for _, dir := range []string{cfg.Dir, filepath.Join(cfg.Dir, "blobs"), c.blobsDir, c.tmpDir, c.pendingDir} {
		if err := mkdir(dir); err != nil {
			return nil, fmt.Errorf("host.cache_dir %s: %w: make it writable for the host daemon, or choose another directory", cfg.Dir, err)
		}
	}
	if err := c.lock(); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if unix.Statfs(cfg.Dir, &st) == nil {
		if size := int64(st.Blocks) * st.Bsize; size < cfg.DiskBytes {
			c.log.Warn("host.cache_disk_bytes is larger than the filesystem of host.cache_dir: the disk may fill before the budget does; lower host.cache_disk_bytes",
				"dir", cfg.Dir, "cache_disk_bytes", cfg.DiskBytes, "filesystem_bytes", size)
		}
	}
	if c.met, err = newMetrics(reg); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.recover(context.Background()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// lock takes an exclusive lock on <Dir>/lock, held until Close.
func (c *Cache) lock() error {
	path := filepath.Join(c.cfg.Dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("host.cache_dir %s: opening the lock file: %w", c.cfg.Dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("host.cache_dir %s is in use by another host cache (locked %s: %v): stop the other `paddock host`, or give this one another host.cache_dir", c.cfg.Dir, path, err)
	}
	c.lockFile = f
	return nil
}

// Close releases the cache directory's lock. Call it after Run has returned and no
// Link or Ingest is running.
func (c *Cache) Close() error {
	if c.lockFile == nil {
		return nil
	}
	err := c.lockFile.Close()
	c.lockFile = nil
	return err
}

// path returns the disk tier's file for d.
func (c *Cache) path(d blob.Digest) string {
	h := d.Hex()
	return filepath.Join(c.blobsDir, h[:2], h)
}

func (c *Cache) journalPath(d blob.Digest) string { return filepath.Join(c.pendingDir, d.Hex()) }

// recover rebuilds the index from the files (see Open).
func (c *Cache) recover(ctx context.Context) error {
	if ents, err := os.ReadDir(c.tmpDir); err == nil {
		for _, e := range ents {
			c.log.Warn("removing a partial file left by an earlier run", "path", filepath.Join(c.tmpDir, e.Name()))
			os.RemoveAll(filepath.Join(c.tmpDir, e.Name()))
		}
	}
	type found struct {
		d     blob.Digest
		size  int64
		mtime time.Time
	}
	var all []found
	err := filepath.WalkDir(c.blobsDir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		name := de.Name()
		d, perr := blob.ParseDigest(blob.DigestPrefix + name)
		info, ierr := de.Info()
		if perr != nil || ierr != nil || !info.Mode().IsRegular() || path != c.path(d) {
			c.log.Warn("removing a file that is not a cached blob", "path", path)
			os.Remove(path)
			return nil
		}
		ent := &diskEntry{size: info.Size()}
		if info.Size() <= verifyAtOpenMax {
			if err := verifyFile(ctx, path, d, info.Size()); err != nil {
				c.log.Warn("removing a corrupt cached blob", "digest", d, "path", path, "err", err)
				os.Remove(path)
				return nil
			}
			ent.verified = true
		}
		c.files[d] = ent
		all = append(all, found{d, info.Size(), info.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the disk tier in host.cache_dir %s: %w", c.cfg.Dir, err)
	}
	// Older files first, so LRU starts from the files' age.
	sort.Slice(all, func(i, j int) bool { return all[i].mtime.Before(all[j].mtime) })
	for _, f := range all {
		c.disk.pol.Touch(string(f.d), c.tick())
		c.disk.used += f.size
	}
	ents, err := os.ReadDir(c.pendingDir)
	if err != nil {
		return fmt.Errorf("reading pending uploads in host.cache_dir %s: %w", c.cfg.Dir, err)
	}
	for _, de := range ents {
		path := filepath.Join(c.pendingDir, de.Name())
		var j journal
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &j)
		}
		if err == nil && j.Digest.Hex() != de.Name() {
			err = fmt.Errorf("the journal names %s", j.Digest)
		}
		if err != nil {
			c.log.Warn("removing an unreadable pending-upload journal (partial write?)", "path", path, "err", err)
			os.Remove(path)
			continue
		}
		e := c.files[j.Digest]
		if e == nil || e.size != j.Size {
			c.log.Error("an output blob waiting for upload is missing or corrupt in the disk tier: it is lost; its task must run again", "digest", j.Digest, "path", c.path(j.Digest))
			os.Remove(path)
			continue
		}
		e.pending = true
		c.pending[j.Digest] = &upload{size: j.Size}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.disk.makeRoom(0, c.diskPinned, c.evictDisk) {
		c.log.Warn("the disk tier is over host.cache_disk_bytes with blobs waiting for upload", "bytes", c.disk.used, "budget", c.disk.budget, "pending", len(c.pending))
	}
	c.updateGauges()
	if len(c.files) > 0 || len(c.pending) > 0 {
		c.log.Info("host cache opened", "dir", c.cfg.Dir, "blobs", len(c.files), "bytes", c.disk.used, "pending_uploads", len(c.pending))
	}
	return nil
}

// tick advances the logical clock; the cache's lock is held (or Open is running).
func (c *Cache) tick() int64 {
	c.clock++
	return c.clock
}

// diskPinned and memPinned tell the policies which keys they must not pick. c.mu is held.
func (c *Cache) diskPinned(k string) bool {
	e := c.files[blob.Digest(k)]
	return e != nil && (e.pins > 0 || e.pending)
}

func (c *Cache) memPinned(k string) bool {
	e := c.blobs[blob.Digest(k)]
	return e != nil && e.pins > 0
}

// evictDisk removes one unpinned disk entry and its file. c.mu is held.
func (c *Cache) evictDisk(k string) int64 {
	d := blob.Digest(k)
	e := c.files[d]
	delete(c.files, d)
	c.changed()
	if err := os.Remove(c.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("removing an evicted blob", "digest", d, "err", err)
	}
	c.met.evictions.WithLabelValues(TierDisk).Inc()
	return e.size
}

// evictMem drops one unpinned memory entry. c.mu is held.
func (c *Cache) evictMem(k string) int64 {
	d := blob.Digest(k)
	e := c.blobs[d]
	delete(c.blobs, d)
	c.changed()
	c.met.evictions.WithLabelValues(TierMemory).Inc()
	return int64(len(e.data))
}

// updateGauges refreshes the byte and pending gauges. c.mu is held.
func (c *Cache) updateGauges() {
	c.met.bytes.WithLabelValues(TierDisk).Set(float64(c.disk.used))
	c.met.bytes.WithLabelValues(TierMemory).Set(float64(c.mem.used))
	c.met.pending.Set(float64(len(c.pending)))
}

// reserveDisk makes room for size more bytes in the disk tier and counts them as used
// (the caller releases them with c.disk.used -= size, or turns them into an entry).
// c.mu is held.
func (c *Cache) reserveDisk(d blob.Digest, size int64) error {
	if size > c.disk.budget {
		return fmt.Errorf("blob %s is %d bytes, more than host.cache_disk_bytes (%d) (%w, %w): raise host.cache_disk_bytes, or use host.cache_read_policy no-cache for inputs this large",
			d, size, c.disk.budget, ErrFull, blob.ErrUnavailable)
	}
	if !c.disk.makeRoom(size, c.diskPinned, c.evictDisk) {
		var pinned, pend int64
		for _, e := range c.files {
			if e.pending {
				pend += e.size
			} else if e.pins > 0 {
				pinned += e.size
			}
		}
		c.updateGauges()
		return fmt.Errorf("the disk tier in %s cannot take blob %s (%d bytes) (%w, %w): of host.cache_disk_bytes (%d), %d bytes are blobs in use, %d bytes are %d outputs waiting for upload, %d bytes downloads in progress: raise host.cache_disk_bytes, run fewer tasks at once, or check that the server is reachable so uploads drain",
			c.blobsDir, d, size, ErrFull, blob.ErrUnavailable, c.disk.budget, pinned, pend, len(c.pending), c.disk.used-pinned-pend-c.unpinnedBytes())
	}
	c.disk.used += size
	c.updateGauges()
	return nil
}

// unpinnedBytes returns the bytes of evictable disk entries. c.mu is held.
func (c *Cache) unpinnedBytes() int64 {
	var n int64
	for _, e := range c.files {
		if e.pins == 0 && !e.pending {
			n += e.size
		}
	}
	return n
}

// insertDisk renames the verified file tmp into the disk tier as blob d, whose size
// bytes were reserved, and returns the entry pinned once. c.mu is held.
func (c *Cache) insertDisk(d blob.Digest, size int64, tmp string) (*diskEntry, error) {
	path := c.path(d)
	if err := mkdir(filepath.Dir(path)); err != nil {
		c.disk.used -= size
		return nil, fmt.Errorf("adding blob %s to the disk tier: %w", d, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		c.disk.used -= size
		return nil, fmt.Errorf("adding blob %s to the disk tier: %w", d, err)
	}
	e := c.files[d]
	if e != nil { // someone else added it meanwhile: the same bytes
		c.disk.used -= size
	} else {
		e = &diskEntry{size: size}
		c.files[d] = e
		c.changed()
	}
	e.verified = true
	e.pins++
	c.disk.pol.Touch(string(d), c.tick())
	c.updateGauges()
	return e, nil
}

// unpin releases one pin of a disk entry (which may have left the index meanwhile).
func (c *Cache) unpin(e *diskEntry) {
	c.mu.Lock()
	if e.pins > 0 {
		e.pins--
	}
	c.mu.Unlock()
}

// dropCorrupt removes e, found corrupt, from the disk tier unless it left already. c.mu
// is held.
func (c *Cache) dropCorrupt(d blob.Digest, e *diskEntry) {
	if c.files[d] != e {
		return
	}
	delete(c.files, d)
	c.changed()
	if err := os.Remove(c.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("removing a corrupt cached blob", "digest", d, "err", err)
	}
	c.disk.used -= e.size
	c.disk.pol.Remove(string(d))
	c.updateGauges()
}

// admitMemory puts data (blob d, verified) into the memory tier when it fits. c.mu is
// held; now is the reference's time.
func (c *Cache) admitMemory(d blob.Digest, data []byte, now int64) {
	n := int64(len(data))
	if c.mem.budget == 0 || n > c.memMax {
		return
	}
	if _, ok := c.blobs[d]; ok {
		c.mem.pol.Touch(string(d), now)
		return
	}
	if !c.mem.makeRoom(n, c.memPinned, c.evictMem) {
		return
	}
	c.blobs[d] = &memEntry{data: data}
	c.changed()
	c.mem.used += n
	c.mem.pol.Touch(string(d), now)
	c.updateGauges()
}

// Stats is a snapshot of the cache's contents.
type Stats struct {
	MemoryBytes, DiskBytes int64 // bytes used (disk: with reservations for downloads in progress)
	MemoryBlobs, DiskBlobs int
	Pending                int // outputs waiting for upload
}

// Stats returns a snapshot of the cache's contents.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{MemoryBytes: c.mem.used, DiskBytes: c.disk.used, MemoryBlobs: len(c.blobs), DiskBlobs: len(c.files), Pending: len(c.pending)}
}

// Has returns the tiers that hold d now (TierMemory, TierDisk), highest first.
func (c *Cache) Has(d blob.Digest) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	if _, ok := c.blobs[d]; ok {
		out = append(out, TierMemory)
	}
	if _, ok := c.files[d]; ok {
		out = append(out, TierDisk)
	}
	return out
}

// Largest returns the digests of the n largest blobs the cache holds or is fetching
// (disk and memory tiers, pending uploads and downloads in progress included), largest
// first, ties by digest: the compact summary the host sends the server with its status
// for locality-aware placement. A download in progress counts: a task placed here now
// waits for that one fetch instead of another host fetching the blob again.
func (c *Cache) Largest(n int) []blob.Digest {
	type ent struct {
		d    blob.Digest
		size int64
	}
	c.mu.Lock()
	all := make([]ent, 0, len(c.files)+len(c.blobs)+len(c.flights))
	for d, e := range c.files {
		all = append(all, ent{d, e.size})
	}
	for d, e := range c.blobs {
		if _, ok := c.files[d]; !ok {
			all = append(all, ent{d, int64(len(e.data))})
		}
	}
	for d, f := range c.flights {
		if _, ok := c.files[d]; !ok {
			if _, ok := c.blobs[d]; !ok {
				all = append(all, ent{d, f.size})
			}
		}
	}
	c.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if all[i].size != all[j].size {
			return all[i].size > all[j].size
		}
		return all[i].d < all[j].d
	})
	if len(all) > n {
		all = all[:max(n, 0)]
	}
	out := make([]blob.Digest, len(all))
	for i, e := range all {
		out[i] = e.d
	}
	return out
}

// Changes returns a channel that receives after the set of blobs Largest lists changed
// (a download started or failed, a blob was added, evicted or dropped): the host daemon
// sends its summary then instead of with its next periodic status. Signals coalesce:
// one receive may stand for many changes.
func (c *Cache) Changes() <-chan struct{} { return c.changes }

// changed signals Changes. c.mu is held.
func (c *Cache) changed() {
	select {
	case c.changes <- struct{}{}:
	default:
	}
}
