package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/hostd/bwshare"
)

// peerEnv names the cache directory a re-executed test binary serves as a peer host.
const peerEnv = "PADDOCK_TEST_PEER_CACHE_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(peerEnv); dir != "" {
		if err := servePeer(dir); err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// noSource is the Source and Sink of a cache that only serves its peers.
type noSource struct{}

func (noSource) Stat(context.Context, blob.Digest) (blob.Info, error) {
	return blob.Info{}, blob.ErrUnavailable
}
func (noSource) Open(context.Context, blob.Digest, int64) (io.ReadCloser, error) {
	return nil, blob.ErrUnavailable
}
func (noSource) Put(context.Context, blob.Digest, int64, io.Reader) error { return blob.ErrUnavailable }

// servePeer opens the cache in dir and serves it to peers on loopback (as `paddock
// host` does on host.peer_listen), printing "listening <addr>"; it runs until killed.
func servePeer(dir string) error {
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	c, err := Open(cfg, noSource{}, noSource{}, nil)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", l.Addr())
	h := blobhttp.NewHandler(PeerStore(c), blobhttp.Options{Logger: cfg.Logger})
	mux := http.NewServeMux()
	mux.Handle(blobhttp.Prefix, h)
	mux.Handle(blobhttp.Prefix+"/", h)
	return http.Serve(l, mux)
}

// startPeer runs a peer host serving the cache in dir in a subprocess; it returns the
// peer's URL and the process (killed when the test ends).
func startPeer(t *testing.T, dir string) (string, *os.Process) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), peerEnv+"="+dir)
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("the peer process said %q (%v)", line, err)
	}
	return "http://" + addr, cmd.Process
}

// countingSource counts the bytes read from a Source.
type countingSource struct {
	Source
	n atomic.Int64
}

func (s *countingSource) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	rc, err := s.Source.Open(ctx, d, offset)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{&countReader{r: rc, n: &s.n}, rc}, nil
}

// TestPeerFetchFallsBackWhenPeerDies: host A fetches a 64 MiB blob that peer host B
// holds in its cache (B serves it from a subprocess); B is killed mid-transfer; A's
// fetch completes from the blob store from where B stopped, with the right digest. A
// second fetch does not ask B (down) and a blob B lacks comes from the store.
func TestPeerFetchFallsBackWhenPeerDies(t *testing.T) {
	const size = 64 << 20
	url, ds := blobServer(t, size, 7, 8)
	d, other := ds[0], ds[1]
	store := &countingSource{Source: HTTPSource{Client: &blobhttp.Client{BaseURL: url}}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Host B's cache gets the blob from the store, then is served by the peer process.
	cfgB := testConfig(t)
	cfgB.MemoryBytes = 0
	b, err := Open(cfgB, store, newMemSink(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Link(ctx, d, size, filepath.Join(t.TempDir(), "in")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	peerURL, peer := startPeer(t, cfgB.Dir)
	// The peer hashes a large blob found at its start before it serves it.
	pc := &blobhttp.Client{BaseURL: peerURL}
	for _, err := pc.Stat(ctx, d); err != nil; _, err = pc.Stat(ctx, d) {
		if !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("asking the peer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	store.n.Store(0)

	// Host A fetches through PeerSource, shaped to 32 MB/s so the transfer lasts ~2 s.
	cfgA := testConfig(t)
	cfgA.MemoryBytes = 0
	var peerBytes atomic.Int64
	var peerFailed atomic.Bool
	ps := &PeerSource{Store: store, Peers: []Peer{{Name: peerURL, Source: HTTPSource{Client: &blobhttp.Client{BaseURL: peerURL}}}}, Logger: cfgA.Logger,
		OnPeerBytes: func(_ string, n int64, failed bool) {
			peerBytes.Add(n)
			if failed {
				peerFailed.Store(true)
			}
		}}
	sh, err := bwshare.New(bwshare.Config{Capacity: 32e6}, cfgA.Logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, sink := Shaped(ps, newMemSink(), sh)
	a := mustOpen(t, cfgA, src, sink)

	var killed sync.WaitGroup
	killed.Add(1)
	go func() { // kill the peer once 8 MiB have come
		defer killed.Done()
		for sh.Bytes(bwshare.DefaultClass) < 8<<20 && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		peer.Kill()
		t.Logf("peer killed after %d bytes", sh.Bytes(bwshare.DefaultClass))
	}()
	out := t.TempDir()
	res, err := a.Link(ctx, d, size, filepath.Join(out, "in"))
	killed.Wait()
	if err != nil {
		t.Fatalf("fetch with the peer killed mid-transfer: %v", err)
	}
	checkDigest(t, filepath.Join(out, "in"), d)
	fromPeer, fromStore := peerBytes.Load(), store.n.Load()
	t.Logf("fetched %d bytes: %d from the peer, %d from the store (LinkResult %+v)", int64(size), fromPeer, fromStore, res)
	if !peerFailed.Load() || fromPeer < 8<<20 || fromPeer >= size {
		t.Errorf("the peer gave %d bytes (failed %v): want a part of the blob, then a failure", fromPeer, peerFailed.Load())
	}
	if fromPeer+fromStore < size || fromStore >= size {
		t.Errorf("the store gave %d bytes and the peer %d: want the rest of %d from the store", fromStore, fromPeer, int64(size))
	}

	// The peer is down: the next blob comes from the store without asking it.
	store.n.Store(0)
	if _, err := a.Link(ctx, other, size, filepath.Join(out, "other")); err != nil {
		t.Fatal(err)
	}
	checkDigest(t, filepath.Join(out, "other"), other)
	if got := store.n.Load(); got != size {
		t.Errorf("the store gave %d bytes of the second blob, want %d", got, int64(size))
	}
}

// TestPeerSourceChoice: a peer that lacks the blob is skipped; a peer measured slower
// than the store is not asked.
func TestPeerSourceChoice(t *testing.T) {
	const size = 4 << 20
	url, ds := blobServer(t, size, 9)
	store := &countingSource{Source: HTTPSource{Client: &blobhttp.Client{BaseURL: url}}}
	empty, err := blob.OpenFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	peerURL := serveStore(t, empty)
	peer := &countingSource{Source: HTTPSource{Client: &blobhttp.Client{BaseURL: peerURL}}}
	ps := &PeerSource{Store: store, Peers: []Peer{{Name: "p", Source: peer}}}
	ctx := context.Background()
	read := func() {
		t.Helper()
		rc, err := ps.Open(ctx, ds[0], 0)
		if err != nil {
			t.Fatal(err)
		}
		h := blob.NewHasher()
		if _, err := io.Copy(h, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if err := h.Verify(ds[0], size); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if store.n.Load() != size || peer.n.Load() != 0 {
		t.Errorf("a peer without the blob: store gave %d, peer %d; want all from the store", store.n.Load(), peer.n.Load())
	}
	// Measured (a fresh source: no real transfer in the means): the peer at 1 MB/s, the
	// store at 100 MB/s: the peer is not asked; after faster transfers it is again.
	ps = &PeerSource{Store: store, Peers: []Peer{{Name: "p", Source: peer}}}
	if !ps.usable("p", time.Now()) {
		t.Error("a peer not yet measured is not asked")
	}
	ps.measure("p", 1<<20, time.Second)
	ps.measure("", 100<<20, time.Second)
	if ps.usable("p", time.Now()) {
		t.Error("a peer measured slower than the store is still asked")
	}
	for range 3 {
		ps.measure("p", 1000<<20, time.Second)
	}
	if !ps.usable("p", time.Now()) {
		t.Error("a peer measured faster than the store is not asked")
	}
	if _, err := ps.Open(ctx, blob.Digest("sha256:"+strings.Repeat("0", 64)), 0); err != nil && !errors.Is(err, blob.ErrNotFound) {
		t.Logf("open of a missing blob: %v", err)
	}
}

// lyingPeer holds every blob, with the wrong bytes (of the right size).
type lyingPeer struct{ size int64 }

func (p lyingPeer) Stat(_ context.Context, d blob.Digest) (blob.Info, error) {
	return blob.Info{Digest: d, Size: p.size}, nil
}

func (p lyingPeer) Open(_ context.Context, _ blob.Digest, offset int64) (io.ReadCloser, error) {
	return io.NopCloser(seeded(99, p.size-offset)), nil
}

// TestPeerWrongBytesRefetchedFromStore: a peer that serves wrong bytes makes the digest
// check fail; the cache fetches the blob again from the store alone and links the right one.
func TestPeerWrongBytesRefetchedFromStore(t *testing.T) {
	const size = 2 << 20
	url, ds := blobServer(t, size, 5)
	store := &countingSource{Source: HTTPSource{Client: &blobhttp.Client{BaseURL: url}}}
	cfg := testConfig(t)
	ps := &PeerSource{Store: store, Peers: []Peer{{Name: "liar", Source: lyingPeer{size}}}, Logger: cfg.Logger}
	sh, err := bwshare.New(bwshare.Config{}, cfg.Logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, sink := Shaped(ps, newMemSink(), sh)
	c := mustOpen(t, cfg, src, sink)
	dst := filepath.Join(t.TempDir(), "in")
	if _, err := c.Link(context.Background(), ds[0], size, dst); err != nil {
		t.Fatalf("fetch with a lying peer: %v", err)
	}
	checkDigest(t, dst, ds[0])
	if got := store.n.Load(); got != size {
		t.Errorf("the store gave %d bytes, want the whole blob (%d) after the peer's mismatch", got, int64(size))
	}
}
