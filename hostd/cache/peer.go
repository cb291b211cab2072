package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
)

// HTTPSource is a Source over the blob HTTP API (blobhttp): a peer host's cache
// (PeerStore served by `paddock host` on host.peer_listen), or a blob server.
type HTTPSource struct {
	Client *blobhttp.Client
}

var _ Source = HTTPSource{}

// Stat asks the server for the blob's size (HEAD).
func (s HTTPSource) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	return s.Client.Stat(ctx, d)
}

// Open returns the blob's bytes from offset (GET with Range): the response body, read as
// it comes (the cache verifies the digest; no second hash here). Errors wrap
// blob.ErrNotFound (404), blob.ErrInvalid (416, a bad offset) or blob.ErrUnavailable.
func (s HTTPSource) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	op := "downloading " + string(d) + " from " + s.Client.BaseURL
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(s.Client.BaseURL, "/")+blobhttp.Prefix+"/"+string(d), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", op, blob.ErrInvalid, err)
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	if s.Client.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Client.Token)
	}
	hc := s.Client.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return nil, fmt.Errorf("%s: %w: %w", op, blob.ErrUnavailable, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK && offset == 0, resp.StatusCode == http.StatusPartialContent:
		return resp.Body, nil
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK: // the server ignored the Range
		return nil, fmt.Errorf("%s: %w: the server ignored Range bytes=%d-", op, blob.ErrUnavailable, offset)
	case http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", op, blob.ErrNotFound)
	case http.StatusRequestedRangeNotSatisfiable:
		return nil, fmt.Errorf("%s: %w: offset %d is past the blob's end", op, blob.ErrInvalid, offset)
	}
	return nil, fmt.Errorf("%s: %w: HTTP %s", op, blob.ErrUnavailable, resp.Status)
}

// Peer is a peer host whose cache a PeerSource may fetch from.
type Peer struct {
	// Name names it in logs (its address).
	Name string
	Source
}

// peerCooldown is how long a peer that failed is not asked again.
const peerCooldown = 30 * time.Second

// peerStatTimeout bounds asking a peer whether it holds a blob.
const peerStatTimeout = 2 * time.Second

// PeerSource is the Source choice of host.peer_fetch: a blob that a peer host holds in
// its cache is fetched from the peer when the peer is known to be at least as fast as
// the store (or not yet measured); otherwise, or when no peer holds it, from the store.
// A peer that fails before or during a transfer is dropped for that transfer and the
// rest comes from the store from where the peer stopped (the cache verifies the whole
// blob's digest, whatever its sources); the peer is not asked again for 30s.
//
// Speeds are measured per source as the mean bytes/s of its recent transfers (an
// exponentially weighted average over transfers of at least 1 MiB).
type PeerSource struct {
	// Store is where blobs are when no peer has them: the server.
	Store Source
	// Peers are asked in order.
	Peers []Peer
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// OnPeerBytes, when set, is told the bytes each transfer took from a peer, and
	// whether the peer failed during it (for metrics).
	OnPeerBytes func(peer string, n int64, failed bool)

	// mu guards the fields below.
	mu    sync.Mutex
	down  map[string]time.Time // peer name → not asked before
	speed map[string]float64   // source name ("" for the store) → bytes/s
}

var _ Source = (*PeerSource)(nil)

// usesPeers implements peered.
func (s *PeerSource) usesPeers() bool { return len(s.Peers) > 0 }

// peered is a Source that may serve bytes from peer hosts: a fetch from it that does not
// match its digest is tried once more from the store alone.
type peered interface{ usesPeers() bool }

func usesPeers(s Source) bool {
	p, ok := s.(peered)
	return ok && p.usesPeers()
}

type storeOnlyKey struct{}

func withStoreOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, storeOnlyKey{}, true)
}

func storeOnly(ctx context.Context) bool { return ctx.Value(storeOnlyKey{}) != nil }

// Stat asks the store.
func (s *PeerSource) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	return s.Store.Stat(ctx, d)
}

func (s *PeerSource) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Open returns the blob's bytes from offset: from a peer that holds it and is not
// slower than the store, else (and always under a context the cache marked store-only,
// when a fetch with a peer's bytes did not match its digest) from the store.
func (s *PeerSource) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	now := time.Now()
	for _, p := range s.Peers {
		if storeOnly(ctx) {
			break
		}
		if !s.usable(p.Name, now) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, peerStatTimeout)
		info, err := p.Stat(sctx, d)
		cancel()
		if err != nil {
			if !errors.Is(err, blob.ErrNotFound) && ctx.Err() == nil {
				s.fail(p.Name, "asking a peer host for a blob", d, err)
			}
			continue
		}
		if offset > info.Size {
			continue
		}
		rc, err := p.Open(ctx, d, offset)
		if err != nil {
			s.fail(p.Name, "fetching a blob from a peer host", d, err)
			continue
		}
		return &peerReader{s: s, ctx: ctx, peer: p.Name, d: d, size: info.Size, off: offset, rc: rc, start: time.Now()}, nil
	}
	rc, err := s.Store.Open(ctx, d, offset)
	if err != nil {
		return nil, err
	}
	return &peerReader{s: s, ctx: ctx, d: d, size: -1, off: offset, rc: rc, start: time.Now()}, nil
}

// usable reports whether peer may be asked: not failed lately and not measured slower
// than the store.
func (s *PeerSource) usable(peer string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Before(s.down[peer]) {
		return false
	}
	ps, pok := s.speed[peer]
	ss, sok := s.speed[""]
	return !pok || !sok || ps >= ss
}

func (s *PeerSource) fail(peer, what string, d blob.Digest, err error) {
	s.mu.Lock()
	if s.down == nil {
		s.down = map[string]time.Time{}
	}
	s.down[peer] = time.Now().Add(peerCooldown)
	s.mu.Unlock()
	s.log().Warn(what+" failed: using the blob store; the peer is not asked again for "+peerCooldown.String(), "peer", peer, "digest", d, "err", err)
}

// measure records a transfer of n bytes in el from source (peer name; "" the store).
func (s *PeerSource) measure(source string, n int64, el time.Duration) {
	if n < 1<<20 || el <= 0 {
		return
	}
	r := float64(n) / el.Seconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.speed == nil {
		s.speed = map[string]float64{}
	}
	if old, ok := s.speed[source]; ok {
		r = 0.7*old + 0.3*r
	}
	s.speed[source] = r
}

// peerReader reads a blob from a peer (peer != "") and, when the peer fails, the rest
// from the store; or from the store alone (peer == "").
type peerReader struct {
	s     *PeerSource
	ctx   context.Context
	peer  string // "" once reading from the store
	d     blob.Digest
	size  int64 // the blob's size as the peer said (-1: from the store, unchecked here)
	off   int64 // offset of the next byte
	rc    io.ReadCloser
	start time.Time
	n     int64 // bytes from the current source
}

func (r *peerReader) Read(p []byte) (int, error) {
	k, err := r.rc.Read(p)
	r.off += int64(k)
	r.n += int64(k)
	if r.peer == "" || r.ctx.Err() != nil {
		return k, err
	}
	if err == io.EOF && r.off == r.size {
		return k, err
	}
	if err == nil {
		return k, nil
	}
	if err == io.EOF {
		err = fmt.Errorf("the peer ended the blob after %d of %d bytes", r.off, r.size)
	}
	// The peer failed mid-transfer: the rest from the store.
	r.s.fail(r.peer, "a peer host's transfer", r.d, err)
	r.finish(true)
	rc, oerr := r.s.Store.Open(r.ctx, r.d, r.off)
	if oerr != nil {
		r.rc = io.NopCloser(eofReader{})
		return k, fmt.Errorf("fetching blob %s from the store after a peer failed at byte %d: %w", r.d, r.off, oerr)
	}
	r.rc, r.peer, r.n, r.start = rc, "", 0, time.Now()
	return k, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// finish closes the current source and records its speed and bytes.
func (r *peerReader) finish(failed bool) {
	r.rc.Close()
	if !failed {
		r.s.measure(r.peer, r.n, time.Since(r.start))
	}
	if r.peer != "" && r.s.OnPeerBytes != nil {
		r.s.OnPeerBytes(r.peer, r.n, failed)
	}
}

func (r *peerReader) Close() error {
	r.finish(false)
	return nil
}

// PeerStore is the read-only blob.Store view of c that `paddock host` serves to its
// peers (host.peer_listen) with blobhttp.NewHandler: Stat and Open of verified blobs of
// the disk tier (a blob being read is pinned: never evicted meanwhile); the rest is
// refused with blob.ErrInvalid.
func PeerStore(c *Cache) blob.Store { return peerStore{c} }

type peerStore struct{ c *Cache }

var errReadOnly = fmt.Errorf("%w: a host cache serves its peers read-only", blob.ErrInvalid)

func (p peerStore) String() string { return "host-cache:" + p.c.cfg.Dir }

// entry returns d's verified disk entry, pinned, or an error wrapping blob.ErrNotFound.
// A blob found at Open and not yet hashed is not served: the first request starts
// hashing it in the background (later requests get it once it matches).
func (p peerStore) entry(d blob.Digest) (*diskEntry, error) {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.files[d]
	if e != nil && !e.verified && !e.checking {
		e.checking = true
		e.pins++
		go p.check(d, e)
	}
	if e == nil || !e.verified || e.pending {
		return nil, fmt.Errorf("blob %s: %w in this host's cache", d, blob.ErrNotFound)
	}
	e.pins++
	return e, nil
}

// check hashes e (pinned once for it), a blob found at Open, for a peer.
func (p peerStore) check(d blob.Digest, e *diskEntry) {
	c := p.c
	err := verifyFile(context.Background(), c.path(d), d, e.size)
	c.mu.Lock()
	defer c.mu.Unlock()
	e.pins--
	e.checking = false
	if err == nil {
		e.verified = true
		return
	}
	c.log.Warn("a cached blob is corrupt: removing it", "digest", d, "path", c.path(d), "err", err)
	c.dropCorrupt(d, e)
}

func (p peerStore) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	e, err := p.entry(d)
	if err != nil {
		return blob.Info{}, err
	}
	defer p.c.unpin(e)
	fi, err := os.Stat(p.c.path(d))
	if err != nil {
		return blob.Info{}, fmt.Errorf("blob %s: %w in this host's cache (%v)", d, blob.ErrNotFound, err)
	}
	return blob.Info{Digest: d, Size: e.size, ModTime: fi.ModTime()}, nil
}

func (p peerStore) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	e, err := p.entry(d)
	if err != nil {
		return nil, err
	}
	if offset < 0 || offset > e.size {
		p.c.unpin(e)
		return nil, fmt.Errorf("%w: offset %d of blob %s of %d bytes", blob.ErrInvalid, offset, d, e.size)
	}
	f, err := os.Open(p.c.path(d))
	if err == nil {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		p.c.unpin(e)
		return nil, fmt.Errorf("reading cached blob %s for a peer: %w", d, err)
	}
	return &pinnedFile{File: f, unpin: func() { p.c.unpin(e) }}, nil
}

type pinnedFile struct {
	*os.File
	once  sync.Once
	unpin func()
}

func (f *pinnedFile) Close() error {
	f.once.Do(f.unpin)
	return f.File.Close()
}

func (p peerStore) Put(context.Context, blob.Digest, int64, io.Reader) (blob.Info, error) {
	return blob.Info{}, errReadOnly
}

func (p peerStore) Delete(context.Context, blob.Digest) error { return errReadOnly }

func (p peerStore) List(context.Context, blob.Digest, int) ([]blob.Info, error) {
	return nil, errReadOnly
}
