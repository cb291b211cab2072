package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/paddockvm/paddock/blob"
)

// LinkResult says how Link served a blob.
type LinkResult struct {
	// Hit is true when the blob was in the cache (no byte came from the Source).
	Hit bool
	// Tier served it: TierDisk (a hard link), TierMemory (the file written from memory)
	// or TierSource (a miss).
	Tier string
	// FetchedBytes is what this call fetched from the Source (0 on a hit, and for callers
	// that waited for another caller's fetch of the same blob).
	FetchedBytes int64
	// Copied is true when dst is on another filesystem than host.cache_dir, so the file
	// was copied rather than hard-linked.
	Copied bool
}

// flight is one fetch (or verification) of a blob into the disk tier that every
// concurrent Link of that blob waits for.
type flight struct {
	done   chan struct{} // closed when finished
	cancel context.CancelFunc
	size   int64 // the blob's size (Largest lists blobs in flight)
	// Guarded by Cache.mu:
	waiters  int  // callers still waiting; the fetch is cancelled when none is left
	finished bool // done is closed; each waiter left then owns one pin of the entry
	err      error
	entry    *diskEntry // the blob's entry, when err is nil
	fetched  int64      // bytes fetched from the Source
	missed   bool       // the Source was asked (the file was not there or was corrupt)
}

// maxNoProgress is how many attempts in a row may fail to move a download forward.
const maxNoProgress = 5

// Link makes dst (a path on the filesystem of host.cache_dir) hold blob d of size bytes
// (size < 0: asked from the Source), replacing what dst was:
//   - a disk hit hard-links dst to the disk tier's file (zero copy; under read policy
//     "promote" a small blob is also copied into the memory tier);
//   - a memory hit writes dst from memory;
//   - a miss fetches the blob into the disk tier (verified, resumed after a cut
//     connection; one fetch per blob however many callers ask at once) and links it;
//     under read policy "no-cache" the blob is fetched straight into dst instead and not
//     kept.
//
// When dst is on another filesystem the file is copied instead (LinkResult.Copied). The
// file at dst is shared with the cache (a hard link): it must not be written to. dst's
// directory must exist. A blob that does not match d (or size) is refused and not kept:
// the error wraps blob.ErrMismatch and names the blob. A disk tier that cannot take the
// blob gives an error wrapping ErrFull.
func (c *Cache) Link(ctx context.Context, d blob.Digest, size int64, dst string) (LinkResult, error) {
	if err := d.Validate(); err != nil {
		return LinkResult{}, fmt.Errorf("linking a blob to %s: %w", dst, err)
	}
	if dst == "" {
		return LinkResult{}, fmt.Errorf("%w: linking blob %s: no destination path", blob.ErrInvalid, d)
	}
	if size < 0 {
		size = c.knownSize(d)
	}
	if size < 0 {
		info, err := c.src.Stat(ctx, d)
		if err != nil {
			return LinkResult{}, fmt.Errorf("linking blob %s: asking the server its size: %w", d, err)
		}
		size = info.Size
	}
	c.mu.Lock()
	if e := c.files[d]; e != nil && e.verified {
		if e.size != size {
			c.mu.Unlock()
			return LinkResult{}, sizeErr(d, e.size, size)
		}
		now := c.tick()
		e.pins++
		c.disk.pol.Touch(string(d), now)
		if _, ok := c.blobs[d]; ok {
			c.mem.pol.Touch(string(d), now)
		}
		c.mu.Unlock()
		res := LinkResult{Hit: true, Tier: TierDisk}
		err := c.linkFromDisk(ctx, d, size, dst, now, c.cfg.ReadPolicy == ReadPromote, &res)
		c.unpin(e)
		if err != nil && errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(c.path(d)); errors.Is(serr, fs.ErrNotExist) {
				// Someone removed the cache's file behind its back: forget it, fetch again.
				c.log.Warn("a cached blob's file is gone: fetching it again", "digest", d, "path", c.path(d))
				c.mu.Lock()
				c.dropCorrupt(d, e)
				c.mu.Unlock()
				return c.Link(ctx, d, size, dst)
			}
		}
		if err == nil {
			c.met.hits.WithLabelValues(TierDisk).Inc()
		}
		return res, err
	}
	if m := c.blobs[d]; m != nil {
		if int64(len(m.data)) != size {
			c.mu.Unlock()
			return LinkResult{}, sizeErr(d, int64(len(m.data)), size)
		}
		m.pins++
		c.mem.pol.Touch(string(d), c.tick())
		c.mu.Unlock()
		c.met.hits.WithLabelValues(TierMemory).Inc()
		err := writeFile(dst, m.data)
		c.mu.Lock()
		m.pins--
		c.mu.Unlock()
		if err != nil {
			return LinkResult{}, diskErr(fmt.Sprintf("writing blob %s from the memory tier to %s", d, dst), filepath.Dir(dst), err)
		}
		return LinkResult{Hit: true, Tier: TierMemory}, nil
	}
	if c.cfg.ReadPolicy == ReadNoCache {
		c.mu.Unlock()
		c.met.misses.Inc()
		n, err := c.fetchTo(ctx, d, size, dst)
		return LinkResult{Tier: TierSource, FetchedBytes: n}, err
	}
	f, started := c.flights[d]
	started = !started
	if started {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel, size: size}
		c.flights[d] = f
		c.changed()
		go c.fly(fctx, d, size, f)
	}
	f.waiters++
	c.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		c.mu.Lock()
		if !f.finished {
			f.waiters--
			if f.waiters == 0 {
				f.cancel()
			}
			c.mu.Unlock()
			return LinkResult{}, fmt.Errorf("linking blob %s: %w", d, ctx.Err())
		}
		c.mu.Unlock()
		if f.err == nil {
			c.unpin(f.entry)
		}
		return LinkResult{}, fmt.Errorf("linking blob %s: %w", d, ctx.Err())
	}
	if f.err != nil {
		return LinkResult{}, f.err
	}
	defer c.unpin(f.entry) // the flight handed this caller a pin
	c.mu.Lock()
	now := c.clock // the flight's reference, for the starter
	if !started && c.files[d] == f.entry {
		now = c.tick()
		c.disk.pol.Touch(string(d), now)
	}
	c.mu.Unlock()
	res := LinkResult{Hit: true, Tier: TierDisk}
	if f.missed {
		res = LinkResult{Tier: TierSource}
		if started {
			res.FetchedBytes = f.fetched
		}
		c.met.misses.Inc()
	} else {
		c.met.hits.WithLabelValues(TierDisk).Inc()
	}
	promote := c.cfg.ReadPolicy == ReadPromote || f.missed
	return res, c.linkFromDisk(ctx, d, size, dst, now, promote && started, &res)
}

// linkFromDisk links dst to d's disk file (pinned by the caller) and, when promote is
// set, copies the blob into the memory tier if it is small enough.
func (c *Cache) linkFromDisk(ctx context.Context, d blob.Digest, size int64, dst string, now int64, promote bool, res *LinkResult) error {
	copied, err := linkFile(ctx, c.path(d), dst)
	res.Copied = copied
	if err != nil {
		return diskErr(fmt.Sprintf("linking blob %s to %s", d, dst), filepath.Dir(dst), err)
	}
	if promote && c.mem.budget > 0 && size <= c.memMax {
		c.mu.Lock()
		_, in := c.blobs[d]
		c.mu.Unlock()
		if !in {
			data, err := os.ReadFile(c.path(d))
			if err == nil && int64(len(data)) == size {
				c.mu.Lock()
				c.admitMemory(d, data, now)
				c.mu.Unlock()
			}
		}
	}
	return nil
}

// knownSize returns d's size when a tier holds it (verified), else -1.
func (c *Cache) knownSize(d blob.Digest) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.files[d]; e != nil && e.verified {
		return e.size
	}
	if m := c.blobs[d]; m != nil {
		return int64(len(m.data))
	}
	return -1
}

func sizeErr(d blob.Digest, have, asked int64) error {
	return fmt.Errorf("%w: blob %s is %d bytes in the host cache, not the %d bytes asked for: the task names a wrong size", blob.ErrMismatch, d, have, asked)
}

// fly runs one flight: it makes d present and verified in the disk tier, then hands
// each waiter a pin of the entry.
func (c *Cache) fly(ctx context.Context, d blob.Digest, size int64, f *flight) {
	e, fetched, missed, err := c.ensureDisk(ctx, d, size)
	c.mu.Lock()
	if err == nil {
		e.pins += f.waiters - 1 // ensureDisk left one pin
	}
	f.entry, f.err, f.fetched, f.missed, f.finished = e, err, fetched, missed, true
	delete(c.flights, d)
	if err != nil {
		c.changed() // Largest listed it while in flight
	}
	close(f.done)
	c.mu.Unlock()
	f.cancel()
}

// ensureDisk makes d present and verified in the disk tier: it hashes a file found at
// Open, or fetches the blob. It returns the entry pinned once.
func (c *Cache) ensureDisk(ctx context.Context, d blob.Digest, size int64) (e *diskEntry, fetched int64, missed bool, err error) {
	c.mu.Lock()
	if e := c.files[d]; e != nil {
		if e.verified {
			if e.size != size {
				c.mu.Unlock()
				return nil, 0, false, sizeErr(d, e.size, size)
			}
			e.pins++
			c.disk.pol.Touch(string(d), c.tick())
			c.mu.Unlock()
			return e, 0, false, nil
		}
		e.pins++
		c.mu.Unlock()
		verr := verifyFile(ctx, c.path(d), d, e.size)
		c.mu.Lock()
		switch {
		case verr == nil && e.size != size:
			e.pins--
			e.verified = true
			c.mu.Unlock()
			return nil, 0, false, sizeErr(d, e.size, size)
		case verr == nil:
			e.verified = true
			c.disk.pol.Touch(string(d), c.tick())
			c.mu.Unlock()
			return e, 0, false, nil
		case ctx.Err() != nil:
			e.pins--
			c.mu.Unlock()
			return nil, 0, false, fmt.Errorf("verifying cached blob %s: %w", d, ctx.Err())
		}
		c.log.Warn("a cached blob is corrupt: removing it and fetching it again", "digest", d, "path", c.path(d), "err", verr)
		e.pins--
		c.dropCorrupt(d, e)
	}
	if err := c.reserveDisk(d, size); err != nil {
		c.mu.Unlock()
		return nil, 0, true, fmt.Errorf("fetching blob %s: %w", d, err)
	}
	c.mu.Unlock()
	part := filepath.Join(c.tmpDir, d.Hex()+".part")
	fetched, err = c.download(ctx, d, size, part)
	c.met.fetched.Add(float64(fetched))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.disk.used -= size
		c.updateGauges()
		return nil, fetched, true, err
	}
	if e, err = c.insertDisk(d, size, part); err != nil {
		os.Remove(part)
		return nil, fetched, true, err
	}
	return e, fetched, true, nil
}

// download fetches blob d into the file part, resuming from what part already holds (a
// download cut earlier), and verifies it. On a mismatch or a disk error part is
// removed; on a cut connection it is kept for the next attempt.
func (c *Cache) download(ctx context.Context, d blob.Digest, size int64, part string) (int64, error) {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return 0, diskErr("fetching blob "+string(d), c.tmpDir, err)
	}
	h := blob.NewHasher()
	have, err := blob.CopyContext(ctx, h, f)
	if err == nil && have > size {
		h, have = blob.NewHasher(), 0
		if err = f.Truncate(0); err == nil {
			_, err = f.Seek(0, io.SeekStart)
		}
	}
	if err != nil {
		f.Close()
		os.Remove(part)
		return 0, fmt.Errorf("fetching blob %s: resuming from %s: %w", d, part, err)
	}
	n, err := c.fetchInto(ctx, d, size, f, h, have)
	if err != nil && errors.Is(err, blob.ErrMismatch) && usesPeers(c.src) && !storeOnly(ctx) {
		// Bytes from a peer host may be what was wrong: once more, from the store alone.
		c.log.Warn("a fetched blob does not match its digest: fetching it again from the store alone (no peer hosts)", "digest", d, "err", err)
		if err = f.Truncate(0); err == nil {
			if _, err = f.Seek(0, io.SeekStart); err == nil {
				var k int64
				k, err = c.fetchInto(withStoreOnly(ctx), d, size, f, blob.NewHasher(), 0)
				n += k
			}
		}
	}
	if err != nil {
		f.Close()
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errCut) {
			os.Remove(part)
		}
		return n, err
	}
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		os.Remove(part)
		return n, diskErr("fetching blob "+string(d), c.tmpDir, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(part)
		return n, diskErr("fetching blob "+string(d), c.tmpDir, err)
	}
	return n, nil
}

// errCut marks a download the Source cut too often: its partial file is kept.
var errCut = errors.New("download cut")

// fetchInto appends blob d's bytes from offset have to f (which holds have bytes, hashed
// into h) until size, retrying a cut connection from where it stopped, then verifies
// the whole. It returns the bytes fetched.
func (c *Cache) fetchInto(ctx context.Context, d blob.Digest, size int64, f *os.File, h *blob.Hasher, have int64) (int64, error) {
	var fetched int64
	for tries := 0; have < size; {
		rc, err := c.src.Open(ctx, d, have)
		var k int64
		if err == nil {
			w := &blob.ErrWriter{W: io.MultiWriter(f, h)}
			// One byte more than expected shows a source that has too many.
			k, err = blob.CopyContext(ctx, w, io.LimitReader(rc, size-have+1))
			rc.Close()
			have += k
			fetched += k
			if w.Err != nil {
				return fetched, diskErr("fetching blob "+string(d), filepath.Dir(f.Name()), w.Err)
			}
			if err == nil && k == 0 {
				return fetched, fmt.Errorf("fetching blob %s from the server: %w", d, &blob.MismatchError{Want: d, WantSize: size, GotSize: have})
			}
			if err == nil {
				continue // ended early but moved on: ask for the rest
			}
		}
		if ctx.Err() != nil {
			return fetched, fmt.Errorf("fetching blob %s: %w", d, ctx.Err())
		}
		if errors.Is(err, blob.ErrNotFound) || errors.Is(err, blob.ErrInvalid) || errors.Is(err, blob.ErrMismatch) {
			return fetched, fmt.Errorf("fetching blob %s from the server: %w", d, err)
		}
		if k > 0 {
			tries = 0
		}
		tries++
		if tries >= maxNoProgress {
			return fetched, fmt.Errorf("fetching blob %s from the server: %w after %d attempts without progress (%d of %d bytes kept for the next try): %w", d, errCut, tries, have, size, err)
		}
		c.log.Debug("fetch cut, resuming", "digest", d, "offset", have, "err", err)
		select {
		case <-ctx.Done():
			return fetched, fmt.Errorf("fetching blob %s: %w", d, ctx.Err())
		case <-time.After(c.fetchRetry << (tries - 1)):
		}
	}
	if have > size {
		return fetched, fmt.Errorf("fetching blob %s from the server: %w", d, &blob.MismatchError{Want: d, WantSize: size, GotSize: -1})
	}
	if err := h.Verify(d, size); err != nil {
		return fetched, fmt.Errorf("fetching blob %s from the server: refused, nothing cached: %w", d, err)
	}
	return fetched, nil
}

// fetchTo fetches blob d straight into dst (read policy no-cache).
func (c *Cache) fetchTo(ctx context.Context, d blob.Digest, size int64, dst string) (int64, error) {
	f, err := createTemp(filepath.Dir(dst))
	if err != nil {
		return 0, diskErr(fmt.Sprintf("fetching blob %s to %s", d, dst), filepath.Dir(dst), err)
	}
	n, err := c.fetchInto(ctx, d, size, f, blob.NewHasher(), 0)
	c.met.fetched.Add(float64(n))
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return n, err
	}
	if err := finishFile(f, dst); err != nil {
		return n, diskErr(fmt.Sprintf("fetching blob %s to %s", d, dst), filepath.Dir(dst), err)
	}
	return n, nil
}
