package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// ErrOutputTooLarge is wrapped by the errors of OutputWriter.Write once the
// task's outputs would pass Request.MaxOutputBytes. A handler returning an error
// that wraps it fails with kind OUTPUT_TOO_LARGE, as does one whose outputs are
// too large when it returns.
var ErrOutputTooLarge = errors.New("output too large")

// OutputFile is one output file as the SDK reports it to the agent.
type OutputFile struct {
	Size   int64
	Digest string // "sha256:<hex>"
}

// call is the SDK's state for one Handle call, shared by every copy of its Request.
type call struct {
	ctx       context.Context
	outputDir string
	max       int64 // 0: no limit

	// mu guards the fields below.
	mu       sync.Mutex
	writers  map[string]*OutputWriter
	total    int64 // bytes written by all writers
	exceeded bool  // a write was refused for passing max
}

func newCall(ctx context.Context, outputDir string, max int64) *call {
	return &call{ctx: ctx, outputDir: outputDir, max: max, writers: map[string]*OutputWriter{}}
}

// CreateOutput creates the output file called name in OutputDir and returns a
// writer that hashes (sha256) and counts what is written. Write the output and
// Close the writer; the SDK closes any writer still open when Handle returns,
// and reports every output file's size and digest to the agent. Writes that
// would take the task's outputs past MaxOutputBytes fail with an error wrapping
// ErrOutputTooLarge.
//
// name must be ValidName (it is the file's name and the output's name) and not
// used twice. CreateOutput fails when the agent offered no OutputDir.
func (r Request) CreateOutput(name string) (*OutputWriter, error) {
	if r.OutputDir == "" {
		return nil, fmt.Errorf("creating output %q: this task has no output directory (Request.OutputDir is empty: the agent offers none for it); return the result inline in Response.Output or Outputs instead", name)
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("creating output %q: not a valid output name (%s)", name, NameRule)
	}
	c := r.call
	if c == nil {
		return nil, fmt.Errorf("creating output %q: the Request was not made by the SDK (CreateOutput works only in a Handle call)", name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.writers[name]; dup {
		return nil, fmt.Errorf("creating output %q: created twice in this task", name)
	}
	path := filepath.Join(r.OutputDir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating output %q: %w", name, err)
	}
	w := &OutputWriter{c: c, name: name, path: path, f: f, h: sha256.New()}
	c.writers[name] = w
	return w, nil
}

// OutputWriter writes one output file; make one with Request.CreateOutput. It is
// not safe for concurrent use.
type OutputWriter struct {
	c    *call
	name string
	path string
	f    *os.File
	h    hash.Hash
	n    int64
	sum  string // digest, set by Close
	err  error  // the first write or close error
}

var _ io.WriteCloser = (*OutputWriter)(nil)

// Name is the output's name.
func (w *OutputWriter) Name() string { return w.name }

// Size is the number of bytes written so far.
func (w *OutputWriter) Size() int64 { return w.n }

// Digest is "sha256:<hex>" of what was written; empty until Close.
func (w *OutputWriter) Digest() string { return w.sum }

// Write writes p to the file. It fails without writing anything once the task
// is cancelled, or when p would take the task's outputs past MaxOutputBytes
// (an error wrapping ErrOutputTooLarge).
func (w *OutputWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.f == nil {
		return 0, fmt.Errorf("writing output %q: %w", w.name, os.ErrClosed)
	}
	if err := w.c.ctx.Err(); err != nil {
		return 0, err
	}
	if err := w.c.reserve(int64(len(p))); err != nil {
		w.err = fmt.Errorf("writing output %q: %w", w.name, err)
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if n < len(p) {
		w.c.release(int64(len(p) - n))
	}
	if err != nil {
		w.err = fmt.Errorf("writing output %q: %w", w.name, err)
		return n, w.err
	}
	return n, nil
}

// Close finishes the file and fixes its digest. Closing twice is harmless.
func (w *OutputWriter) Close() error {
	if w.f == nil {
		return w.err
	}
	err := w.f.Close()
	w.f = nil
	w.sum = "sha256:" + hex.EncodeToString(w.h.Sum(nil))
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("closing output %q: %w", w.name, err)
	}
	return w.err
}

// reserve counts n more bytes against the limit.
func (c *call) reserve(n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.total+n > c.max {
		c.exceeded = true
		return fmt.Errorf("%w: outputs would reach %d bytes, over the agent's limit of %d bytes", ErrOutputTooLarge, c.total+n, c.max)
	}
	c.total += n
	return nil
}

func (c *call) release(n int64) {
	c.mu.Lock()
	c.total -= n
	c.mu.Unlock()
}

// finish closes the writers still open. It returns the first error of any writer.
func (c *call) finish() error {
	c.mu.Lock()
	ws := make([]*OutputWriter, 0, len(c.writers))
	for _, w := range c.writers {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	var first error
	for _, w := range ws {
		if err := w.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// removeCreated removes the files CreateOutput made (after a failed call).
func (c *call) removeCreated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.writers {
		_ = os.Remove(w.path)
	}
}

// collect lists the output files in outputDir: those written through an
// OutputWriter with the size and digest counted while writing, and any other
// regular file the handler wrote there, hashed now. An entry that cannot be an
// output (a bad name, a directory, a symlink) is an error naming it.
func (c *call) collect(ctx context.Context) (map[string]OutputFile, error) {
	if c.outputDir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(c.outputDir)
	if err != nil {
		return nil, fmt.Errorf("listing the output directory: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	out := make(map[string]OutputFile, len(entries))
	for _, e := range entries {
		name := e.Name()
		if !ValidName(name) {
			return nil, fmt.Errorf("output directory holds %q, which is not a valid output name (%s): remove or rename it before returning", name, NameRule)
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("output directory holds %q, a %v: only regular files can be outputs", name, e.Type())
		}
		path := filepath.Join(c.outputDir, name)
		st, err := os.Lstat(path)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", name, err)
		}
		c.mu.Lock()
		w := c.writers[name]
		c.mu.Unlock()
		if w != nil && w.n == st.Size() {
			out[name] = OutputFile{Size: w.n, Digest: w.sum}
			continue
		}
		// Written by hand (or changed after its writer closed): hash it now.
		f, err := hashFile(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", name, err)
		}
		out[name] = f
	}
	return out, nil
}

func hashFile(ctx context.Context, path string) (OutputFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return OutputFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, &ctxReader{ctx: ctx, r: f})
	if err != nil {
		return OutputFile{}, fmt.Errorf("hashing %s: %w", path, err)
	}
	return OutputFile{Size: n, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil))}, nil
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
