package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"

	"github.com/paddockvm/paddock/blob"
)

// Ingest takes the output file at path, which should be blob d of size bytes, into the
// disk tier (a copy, hashed while copying: the file at path may stay writable to a
// guest) and then, by write policy:
//   - "through": uploads it to the Sink before returning;
//   - "async": journals it in <Dir>/pending/<hex> (synced to disk) and returns; Run
//     uploads it, also after a restart. Until uploaded it is never evicted.
//
// A file that is not d (or not size bytes) is refused with an error wrapping
// blob.ErrMismatch that names the file and the blob; nothing is kept. A disk tier that
// cannot take the blob gives an error wrapping ErrFull.
func (c *Cache) Ingest(ctx context.Context, path string, d blob.Digest, size int64) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("ingesting %s: %w", path, err)
	}
	if size < 0 {
		return fmt.Errorf("%w: ingesting %s as blob %s: size %d: give the file's size", blob.ErrInvalid, path, d, size)
	}
	e, err := c.ingest(ctx, path, d, size)
	if err != nil {
		return err
	}
	defer c.unpin(e)
	if c.cfg.WritePolicy == WriteThrough {
		return c.put(ctx, d, size)
	}
	return c.journal(e, d, size)
}

// ingest puts the file at path into the disk tier and returns with the entry pinned.
func (c *Cache) ingest(ctx context.Context, path string, d blob.Digest, size int64) (*diskEntry, error) {
	c.mu.Lock()
	if e := c.files[d]; e != nil && e.verified {
		if e.size != size {
			c.mu.Unlock()
			return nil, sizeErr(d, e.size, size)
		}
		e.pins++
		c.disk.pol.Touch(string(d), c.tick())
		c.mu.Unlock()
		if err := verifyFile(ctx, path, d, size); err != nil {
			c.unpin(e)
			return nil, fmt.Errorf("ingesting output %s as blob %s: %w", path, d, err)
		}
		return e, nil
	}
	if err := c.reserveDisk(d, size); err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("ingesting output %s: %w", path, err)
	}
	c.mu.Unlock()
	tmp, err := c.copyIn(ctx, path, d, size)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.disk.used -= size
		c.updateGauges()
		return nil, err
	}
	e, err := c.insertDisk(d, size, tmp)
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	return e, nil
}

// copyIn copies the file at path into a synced temporary file of the disk tier, hashing
// it, and returns that file's name once it proved to be blob d.
func (c *Cache) copyIn(ctx context.Context, path string, d blob.Digest, size int64) (string, error) {
	in, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("ingesting output %s: %w", path, err)
	}
	defer in.Close()
	f, err := createTemp(c.tmpDir)
	if err != nil {
		return "", diskErr("ingesting output "+path, c.tmpDir, err)
	}
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	h := blob.NewHasher()
	w := &blob.ErrWriter{W: f}
	// One byte more than expected shows a file that is too long.
	if _, err := blob.CopyContext(ctx, teeWriter{w, h}, &limitedFile{in, size + 1}); err != nil {
		if w.Err != nil {
			return fail(diskErr("ingesting output "+path, c.tmpDir, w.Err))
		}
		return fail(fmt.Errorf("ingesting output %s: %w", path, err))
	}
	if h.Size() > size {
		return fail(fmt.Errorf("ingesting output %s: %w", path, &blob.MismatchError{Want: d, WantSize: size, GotSize: -1}))
	}
	if err := h.Verify(d, size); err != nil {
		return fail(fmt.Errorf("ingesting output %s: refused, nothing kept: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		return fail(diskErr("ingesting output "+path, c.tmpDir, err))
	}
	if err := f.Chmod(fileMode); err != nil {
		return fail(diskErr("ingesting output "+path, c.tmpDir, err))
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", diskErr("ingesting output "+path, c.tmpDir, err)
	}
	return f.Name(), nil
}

// teeWriter writes to w and hashes into h.
type teeWriter struct {
	w *blob.ErrWriter
	h *blob.Hasher
}

func (t teeWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	t.h.Write(p[:n])
	return n, err
}

// limitedFile reads at most n bytes of f.
type limitedFile struct {
	f *os.File
	n int64
}

func (l *limitedFile) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// put uploads d's disk file (pinned by the caller) to the Sink.
func (c *Cache) put(ctx context.Context, d blob.Digest, size int64) error {
	f, err := os.Open(c.path(d))
	if err != nil {
		return fmt.Errorf("uploading output blob %s: %w", d, err)
	}
	defer f.Close()
	if err := c.sink.Put(ctx, d, size, f); err != nil {
		c.met.uploadErrors.Inc()
		return fmt.Errorf("uploading output blob %s to the server: %w", d, err)
	}
	return nil
}

// journal records d (its entry e pinned) as waiting for upload and wakes Run.
func (c *Cache) journal(e *diskEntry, d blob.Digest, size int64) error {
	c.mu.Lock()
	_, already := c.pending[d]
	c.mu.Unlock()
	if already {
		return nil
	}
	b, _ := json.Marshal(journal{Digest: d, Size: size, Since: time.Now().UTC()})
	f, err := createTemp(c.tmpDir)
	if err == nil {
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), c.journalPath(d))
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}
	if err == nil {
		err = syncDir(c.pendingDir)
	}
	if err != nil {
		return diskErr("journaling output blob "+string(d)+" for upload", c.pendingDir, err)
	}
	c.mu.Lock()
	e.pending = true
	if _, ok := c.pending[d]; !ok {
		c.pending[d] = &upload{size: size}
	}
	c.updateGauges()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Pending returns the outputs journaled and not yet uploaded, sorted.
func (c *Cache) Pending() []blob.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]blob.Digest, 0, len(c.pending))
	for d := range c.pending {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Run uploads pending outputs (write policy async, and any journaled before a restart)
// until ctx is done, retrying each failure with exponential backoff (1 s doubling up to
// 5 min). It returns nil when ctx ends.
func (c *Cache) Run(ctx context.Context) error {
	for {
		now := time.Now()
		var due []blob.Digest
		next := now.Add(time.Hour)
		c.mu.Lock()
		for d, u := range c.pending {
			if !u.next.After(now) {
				due = append(due, d)
			} else if u.next.Before(next) {
				next = u.next
			}
		}
		c.mu.Unlock()
		sort.Slice(due, func(i, j int) bool { return due[i] < due[j] })
		for _, d := range due {
			if ctx.Err() != nil {
				return nil
			}
			c.upload(ctx, d)
		}
		if len(due) > 0 {
			continue // recompute: uploads take time, and failures set new times
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// upload tries once to upload pending output d.
func (c *Cache) upload(ctx context.Context, d blob.Digest) {
	c.mu.Lock()
	e, u := c.files[d], c.pending[d]
	if u == nil {
		c.mu.Unlock()
		return
	}
	if e == nil { // cannot happen: pending entries are never evicted
		delete(c.pending, d)
		c.updateGauges()
		c.mu.Unlock()
		os.Remove(c.journalPath(d))
		c.log.Error("an output blob waiting for upload vanished from the disk tier: it is lost", "digest", d)
		return
	}
	e.pins++
	verified := e.verified
	c.mu.Unlock()
	defer c.unpin(e)
	if !verified {
		err := verifyFile(ctx, c.path(d), d, u.size)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if err != nil {
			c.log.Error("an output blob waiting for upload is corrupt on disk: it is lost; its task must run again", "digest", d, "path", c.path(d), "err", err)
			delete(c.pending, d)
			e.pending = false
			c.dropCorrupt(d, e)
			c.mu.Unlock()
			os.Remove(c.journalPath(d))
			return
		}
		e.verified = true
		c.mu.Unlock()
	}
	err := c.put(ctx, d, u.size)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		u.attempts++
		wait := c.retryMin << min(u.attempts-1, 20)
		if wait > c.retryMax || wait <= 0 {
			wait = c.retryMax
		}
		u.next = time.Now().Add(wait)
		c.log.Warn("uploading an output blob failed; will retry", "digest", d, "attempt", u.attempts, "retry_in", wait, "err", err)
		return
	}
	if err := os.Remove(c.journalPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("removing an upload's journal", "digest", d, "err", err)
	}
	delete(c.pending, d)
	e.pending = false
	c.updateGauges()
}
