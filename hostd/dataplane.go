package hostd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/hostd/bwshare"
	"github.com/paddockvm/paddock/hostd/cache"
	"github.com/paddockvm/paddock/vmpool"
)

// blobCache is what the data path needs of the host cache; *cache.Cache has it.
type blobCache interface {
	// Link puts blob d (size bytes) at dst, a hard link into the cache when it can.
	Link(ctx context.Context, d blob.Digest, size int64, dst string) (cache.LinkResult, error)
	// Ingest takes the file at path into the cache, verifying digest and size, and
	// uploads it per the write policy.
	Ingest(ctx context.Context, path string, d blob.Digest, size int64) error
	// Pending returns the digests ingested and not yet uploaded (write policy async).
	Pending() []blob.Digest
}

var _ blobCache = (*cache.Cache)(nil)

// Modes of what the data path makes in a guest's input share: QEMU runs as another
// user and only reads.
const (
	leaseDirMode = 0o755
	markerMode   = 0o644
)

// dataPath stages task inputs into guests' input shares and collects outputs from
// their output shares (docs/dataplane.md). Its entry points (started, finished,
// collect) never block: the work runs on its own goroutines and the answers go to send.
type dataPath struct {
	cache  blobCache
	guests func(name string) (vmpool.GuestRef, bool)
	send   func(*hostv1.HostMessage)
	log    *slog.Logger
	met    *dataMetrics
	// classify returns the bandwidth class of a task's transfers from its tenant and
	// class (bwshare.Shaper.Classify); nil: bwshare.DefaultClass.
	classify func(tenant, taskClass string) string

	wg sync.WaitGroup // stagings, cleanups and collects in flight

	// mu guards stagings.
	mu       sync.Mutex
	stagings map[leaseKey]*staging
}

type leaseKey struct {
	guest, task string
	lease       uint64
}

// staging is one lease's staging in flight.
type staging struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newDataPath(c blobCache, guests func(string) (vmpool.GuestRef, bool), send func(*hostv1.HostMessage), log *slog.Logger, met *dataMetrics) *dataPath {
	return &dataPath{cache: c, guests: guests, send: send, log: log, met: met, stagings: map[leaseKey]*staging{}}
}

// wait waits for everything in flight (after ctx of the calls has ended).
func (p *dataPath) wait() { p.wg.Wait() }

// started handles KIND_STARTED of a task with inputs: it stages them on a goroutine of
// their own (bounded by ctx and by the lease's KIND_FINISHED) and sends Staged.
func (p *dataPath) started(ctx context.Context, e *hostv1.TaskEvent) {
	if len(e.GetInputs()) == 0 {
		return
	}
	k := leaseKey{e.GetGuest(), e.GetTaskId(), e.GetLeaseId()}
	sctx, cancel := context.WithCancel(p.withClass(ctx, e.GetTenant(), e.GetTaskClass()))
	s := &staging{cancel: cancel, done: make(chan struct{})}
	p.mu.Lock()
	if _, dup := p.stagings[k]; dup {
		p.mu.Unlock()
		cancel()
		p.log.Warn("task started twice with the same lease; staging it once", "guest", k.guest, "task", k.task, "lease", k.lease)
		return
	}
	p.stagings[k] = s
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(s.done)
		defer cancel()
		st := p.stage(sctx, e)
		p.mu.Lock()
		delete(p.stagings, k)
		p.mu.Unlock()
		p.send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Staged{Staged: st}})
	}()
}

// finished handles KIND_FINISHED: it stops the lease's staging if it still runs and
// removes the lease's directories from both shares.
func (p *dataPath) finished(e *hostv1.TaskEvent) {
	k := leaseKey{e.GetGuest(), e.GetTaskId(), e.GetLeaseId()}
	p.mu.Lock()
	s := p.stagings[k]
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if s != nil {
			s.cancel()
			<-s.done
		}
		p.cleanup(k)
	}()
}

// collect handles a Collect on a goroutine of its own and sends Collected.
func (p *dataPath) collect(ctx context.Context, c *hostv1.Collect) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		cctx := p.withClass(ctx, c.GetTenant(), c.GetTaskClass())
		p.send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Collected{Collected: p.collectOutputs(cctx, c)}})
	}()
}

// withClass returns ctx carrying the bandwidth class of a task's transfers.
func (p *dataPath) withClass(ctx context.Context, tenant, taskClass string) context.Context {
	if p.classify == nil {
		return ctx
	}
	return bwshare.WithClass(ctx, p.classify(tenant, taskClass))
}

// CheckPeers checks host.peer_fetch and host.peers; the error names the key and the fix.
func CheckPeers(peerFetch bool, peers []string) error {
	if !peerFetch {
		return nil
	}
	if len(peers) == 0 {
		return errors.New("host.peer_fetch is true but host.peers is empty: list the peer hosts' host.peer_listen addresses as URLs, e.g. [http://host2:7074], or set host.peer_fetch false")
	}
	for _, raw := range peers {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("host.peers: %q: want a URL such as http://host2:7074 (a peer's host.peer_listen)", raw)
		}
	}
	return nil
}

// peerSource returns the cache's Source: the server (store), or under host.peer_fetch
// a cache.PeerSource over the peers of host.peers and the server.
func peerSource(cfg Config, store cache.Source, log *slog.Logger, met *dataMetrics) (cache.Source, error) {
	if err := CheckPeers(cfg.PeerFetch, cfg.Peers); err != nil || !cfg.PeerFetch {
		return store, err
	}
	ps := &cache.PeerSource{Store: store, Logger: log, OnPeerBytes: func(_ string, n int64, failed bool) {
		met.peerBytes.Add(float64(n))
		if failed {
			met.peerFailures.Inc()
		}
	}}
	for _, p := range cfg.Peers {
		ps.Peers = append(ps.Peers, cache.Peer{Name: p, Source: cache.HTTPSource{Client: &blobhttp.Client{BaseURL: p}}})
	}
	log.Info("peer fetch on: blobs a peer host caches may come from it", "peers", cfg.Peers)
	return ps, nil
}

// servePeers serves c's blobs read-only to peer hosts on addr (host.peer_listen).
// It returns the server (Close stops it) and the address it listens on.
func servePeers(addr string, c *cache.Cache, log *slog.Logger) (*http.Server, string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("listening on host.peer_listen %s: %w", addr, err)
	}
	h := blobhttp.NewHandler(cache.PeerStore(c), blobhttp.Options{Logger: log})
	mux := http.NewServeMux()
	mux.Handle(blobhttp.Prefix, h)
	mux.Handle(blobhttp.Prefix+"/", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	log.Info("serving the host cache to peer hosts", "listen", l.Addr().String())
	return srv, l.Addr().String(), nil
}

// leaseDirName returns the lease's directory name in the shares, refusing a task id
// that would not make a single plain path element.
func leaseDirName(task string, lease uint64) (string, error) {
	name := guestabi.LeaseDir(task, lease)
	if task == "" || !guestabi.ValidName(name) {
		return "", fmt.Errorf("task id %q cannot name a directory (%s)", task, guestabi.NameRule)
	}
	return name, nil
}

// failure is a staging or collecting failure with its retryability.
type failure struct {
	err       error
	retryable bool
}

// stage links every input of e into the guest's input share and writes the marker.
func (p *dataPath) stage(ctx context.Context, e *hostv1.TaskEvent) *hostv1.Staged {
	st := &hostv1.Staged{Guest: e.GetGuest(), TaskId: e.GetTaskId(), LeaseId: e.GetLeaseId()}
	log := p.log.With("guest", e.GetGuest(), "task", e.GetTaskId(), "lease", e.GetLeaseId())
	g, ok := p.guests(e.GetGuest())
	if !ok || g.InDir == "" {
		st.Error = fmt.Sprintf("staging the inputs of task %s: guest %s is gone or has no shared directories", e.GetTaskId(), e.GetGuest())
		p.met.staged.WithLabelValues("error").Inc()
		log.Warn("cannot stage inputs", "err", st.Error)
		return st
	}
	name, err := leaseDirName(e.GetTaskId(), e.GetLeaseId())
	if err != nil {
		st.Error = "staging inputs: " + err.Error()
		p.met.staged.WithLabelValues("error").Inc()
		return st
	}
	dir := filepath.Join(g.InDir, name)
	sizes, fetched, cached, serr := p.linkInputs(ctx, dir, e.GetInputs())
	st.FetchedBytes, st.CachedBytes = fetched, cached
	m := guestabi.Marker{OK: serr == nil, Sizes: sizes}
	if serr != nil {
		m.Sizes = nil
		m.Error, m.Retryable = serr.err.Error(), serr.retryable
		st.Error = m.Error
	}
	if err := writeMarker(dir, m); err != nil {
		if st.Error == "" {
			st.Error = err.Error()
		}
		log.Error("cannot write the staging marker: the agent waits until its lease ends", "err", err)
	}
	p.met.stagedBytes.WithLabelValues("fetched").Add(float64(fetched))
	p.met.stagedBytes.WithLabelValues("cached").Add(float64(cached))
	if st.Error != "" {
		p.met.staged.WithLabelValues("error").Inc()
		log.Warn("staging failed", "err", st.Error, "retryable", m.Retryable)
	} else {
		p.met.staged.WithLabelValues("ok").Inc()
		log.Debug("inputs staged", "inputs", len(sizes), "fetched_bytes", fetched, "cached_bytes", cached)
	}
	return st
}

// errNoCache: a Stage or Collect reached a host that did not register "stage".
var errNoCache = errors.New("this host does not stage blobs (host.cache_dir is empty or shared directories are disabled)")

// linkInputs makes dir and links each input into it.
func (p *dataPath) linkInputs(ctx context.Context, dir string, inputs map[string]*hostv1.BlobRef) (sizes map[string]int64, fetched, cached int64, serr *failure) {
	if p.cache == nil {
		return nil, 0, 0, &failure{fmt.Errorf("staging inputs: %w", errNoCache), false}
	}
	if err := os.Mkdir(dir, leaseDirMode); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, 0, 0, &failure{fmt.Errorf("staging inputs: creating %s: %w", dir, err), true}
	}
	if err := os.Chmod(dir, leaseDirMode); err != nil { // the umask may have taken bits
		return nil, 0, 0, &failure{fmt.Errorf("staging inputs: making %s readable by QEMU: %w", dir, err), true}
	}
	names := make([]string, 0, len(inputs))
	for n := range inputs {
		names = append(names, n)
	}
	slices.Sort(names)
	sizes = map[string]int64{}
	for _, n := range names {
		ref := inputs[n]
		if !guestabi.ValidName(n) {
			return nil, fetched, cached, &failure{fmt.Errorf("input %q: not a valid input name (%s)", n, guestabi.NameRule), false}
		}
		d, err := blob.ParseDigest(ref.GetDigest())
		if err != nil {
			return nil, fetched, cached, &failure{fmt.Errorf("input %q: %w", n, err), false}
		}
		dst := filepath.Join(dir, n)
		if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) { // a repeated event
			return nil, fetched, cached, &failure{fmt.Errorf("input %q: removing an earlier %s: %w", n, dst, err), true}
		}
		res, err := p.cache.Link(ctx, d, ref.GetSize(), dst)
		if err != nil {
			switch {
			case errors.Is(err, blob.ErrNotFound):
				return nil, fetched, cached, &failure{fmt.Errorf("input %q: blob %s is not in the server's blob store (removed after the task was submitted?): upload it again and resubmit: %w", n, d, err), false}
			case errors.Is(err, blob.ErrInvalid), errors.Is(err, blob.ErrTooLarge), errors.Is(err, blob.ErrMismatch):
				return nil, fetched, cached, &failure{fmt.Errorf("input %q: blob %s: %w", n, d, err), false}
			default:
				return nil, fetched, cached, &failure{fmt.Errorf("input %q: fetching blob %s into the host cache: %w", n, d, err), true}
			}
		}
		fetched += res.FetchedBytes
		if res.Hit {
			cached += ref.GetSize()
		} else {
			cached += max(ref.GetSize()-res.FetchedBytes, 0)
		}
		fi, err := os.Lstat(dst)
		if err != nil {
			return nil, fetched, cached, &failure{fmt.Errorf("input %q: the staged file: %w", n, err), true}
		}
		if !fi.Mode().IsRegular() || fi.Size() != ref.GetSize() {
			return nil, fetched, cached, &failure{fmt.Errorf("input %q: blob %s staged as %s of %d bytes, the task names %d bytes", n, d, fi.Mode().Type(), fi.Size(), ref.GetSize()), false}
		}
		sizes[n] = fi.Size()
	}
	return sizes, fetched, cached, nil
}

// writeMarker writes m into dir as guestabi.MarkerName: a temporary name first, then a
// rename, so the agent never reads half a marker.
func writeMarker(dir string, m guestabi.Marker) error {
	tmp := filepath.Join(dir, guestabi.MarkerName+".tmp")
	if err := os.WriteFile(tmp, m.Encode(), markerMode); err != nil {
		return fmt.Errorf("writing the staging marker in %s: %w", dir, err)
	}
	if err := os.Chmod(tmp, markerMode); err != nil {
		return fmt.Errorf("writing the staging marker in %s: %w", dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, guestabi.MarkerName)); err != nil {
		return fmt.Errorf("writing the staging marker in %s: %w", dir, err)
	}
	return nil
}

// cleanup removes the lease's directories from the guest's shares.
func (p *dataPath) cleanup(k leaseKey) {
	g, ok := p.guests(k.guest)
	if !ok || g.InDir == "" {
		return // gone: its directory went with it
	}
	name, err := leaseDirName(k.task, k.lease)
	if err != nil {
		return
	}
	for _, share := range []string{g.InDir, g.OutDir} {
		// RemoveAll does not follow symbolic links: a guest's link in its output
		// share is removed, not what it points to.
		if err := os.RemoveAll(filepath.Join(share, name)); err != nil {
			p.log.Warn("removing a finished lease's files", "guest", k.guest, "task", k.task, "err", err)
		}
	}
}

// collectOutputs verifies the outputs c names in the guest's output share and
// ingests them into the cache.
func (p *dataPath) collectOutputs(ctx context.Context, c *hostv1.Collect) *hostv1.Collected {
	res := &hostv1.Collected{RequestId: c.GetRequestId()}
	log := p.log.With("guest", c.GetGuest(), "task", c.GetTaskId(), "lease", c.GetLeaseId())
	var bytes int64
	if f := p.collectFiles(ctx, c, &bytes); f != nil {
		res.Error, res.Retryable = f.err.Error(), f.retryable
		p.met.collected.WithLabelValues("error").Inc()
		log.Warn("collecting outputs failed", "err", f.err, "retryable", f.retryable)
		return res
	}
	pending := p.cache.Pending()
	for _, ref := range c.GetOutputs() {
		if _, ok := slices.BinarySearch(pending, blob.Digest(ref.GetDigest())); ok && !slices.Contains(res.Pending, ref.GetDigest()) {
			res.Pending = append(res.Pending, ref.GetDigest())
		}
	}
	slices.Sort(res.Pending)
	p.met.collected.WithLabelValues("ok").Inc()
	p.met.collectedBytes.Add(float64(bytes))
	log.Debug("outputs collected", "outputs", len(c.GetOutputs()), "bytes", bytes)
	return res
}

func (p *dataPath) collectFiles(ctx context.Context, c *hostv1.Collect, total *int64) *failure {
	if p.cache == nil {
		return &failure{fmt.Errorf("collecting outputs: %w", errNoCache), false}
	}
	g, ok := p.guests(c.GetGuest())
	if !ok || g.OutDir == "" {
		return &failure{fmt.Errorf("collecting outputs of task %s: guest %s is gone or has no shared directories", c.GetTaskId(), c.GetGuest()), true}
	}
	name, err := leaseDirName(c.GetTaskId(), c.GetLeaseId())
	if err != nil {
		return &failure{fmt.Errorf("collecting outputs: %w", err), false}
	}
	outs := c.GetOutputs()
	names := make([]string, 0, len(outs))
	var sum int64
	for n, ref := range outs {
		if !guestabi.ValidName(n) {
			return &failure{fmt.Errorf("output %q: not a valid output name (%s)", n, guestabi.NameRule), false}
		}
		if ref.GetSize() < 0 {
			return &failure{fmt.Errorf("output %q: reported size %d is negative", n, ref.GetSize()), false}
		}
		sum += ref.GetSize()
		names = append(names, n)
	}
	slices.Sort(names)
	if m := c.GetMaxBytes(); m > 0 && sum > m {
		return &failure{fmt.Errorf("the outputs are %d bytes, more than the limit of %d (server.max_output_bytes)", sum, m), false}
	}
	dirFD, err := openLeaseDir(g.OutDir, name)
	if err != nil {
		return &failure{err, !errors.Is(err, errHostile)}
	}
	defer unix.Close(dirFD)
	for _, n := range names {
		ref := outs[n]
		d, err := blob.ParseDigest(ref.GetDigest())
		if err != nil {
			return &failure{fmt.Errorf("output %q: %w", n, err), false}
		}
		f, err := openOutput(dirFD, name, n)
		if err != nil {
			return &failure{err, !errors.Is(err, errHostile)}
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return &failure{fmt.Errorf("output %q: %w", n, err), true}
		}
		if fi.Size() != ref.GetSize() {
			f.Close()
			return &failure{fmt.Errorf("%w: output %q is %d bytes in the guest's output directory, the agent reported %d", blob.ErrMismatch, n, fi.Size(), ref.GetSize()), false}
		}
		// Ingest reads the file we opened and checked, through its descriptor: the
		// guest cannot swap a link in under the name now.
		err = p.cache.Ingest(ctx, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), d, ref.GetSize())
		f.Close()
		if err != nil {
			switch {
			case errors.Is(err, blob.ErrMismatch):
				return &failure{fmt.Errorf("output %q does not match what the agent reported (digest %s, %d bytes): %w", n, d, ref.GetSize(), err), false}
			case errors.Is(err, blob.ErrTooLarge), errors.Is(err, blob.ErrInvalid):
				return &failure{fmt.Errorf("output %q: %w", n, err), false}
			}
			return &failure{fmt.Errorf("output %q: storing blob %s: %w", n, d, err), true}
		}
		*total += ref.GetSize()
	}
	return nil
}

// errHostile marks what only a misbehaving guest makes: a link or a special file where
// a task's directory or output file should be. Running the task again does not help.
var errHostile = errors.New("not a plain file or directory the guest wrote")

// openLeaseDir opens share/name without following a symbolic link at name (the guest
// owns everything under its share).
func openLeaseDir(share, name string) (int, error) {
	fd, err := unix.Open(filepath.Join(share, name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("collecting outputs: the guest's output directory has no %s (no output written)", name)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		return -1, fmt.Errorf("collecting outputs: %s in the guest's output directory is a symbolic link or not a directory: %w", name, errHostile)
	}
	return -1, fmt.Errorf("collecting outputs: opening %s: %w", filepath.Join(share, name), err)
}

// openOutput opens output file n in the lease directory dirFD: no symbolic links, no
// FIFOs or devices (O_NONBLOCK so a FIFO cannot hang the open), regular files only.
func openOutput(dirFD int, lease, n string) (*os.File, error) {
	fd, err := unix.Openat(dirFD, n, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("output %q: no such file in the guest's output directory %s", n, lease)
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("output %q is a symbolic link: %w", n, errHostile)
	case err != nil:
		return nil, fmt.Errorf("output %q: opening it: %w", n, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("output %q: %w", n, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("output %q is not a regular file (mode %#o): %w", n, st.Mode&unix.S_IFMT, errHostile)
	}
	return os.NewFile(uintptr(fd), n), nil
}

// dataMetrics are the data path's counters (the cache registers its own).
type dataMetrics struct {
	staged         *prometheus.CounterVec
	stagedBytes    *prometheus.CounterVec
	collected      *prometheus.CounterVec
	collectedBytes prometheus.Counter
	peerBytes      prometheus.Counter
	peerFailures   prometheus.Counter
}

func newDataMetrics(reg prometheus.Registerer) (*dataMetrics, error) {
	m := &dataMetrics{
		staged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_staged_total",
			Help: "Task stagings (inputs linked into a guest's input share), by result (ok, error)."}, []string{"result"}),
		stagedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_staged_bytes_total",
			Help: "Bytes of staged inputs, by source (fetched from the server, cached on the host)."}, []string{"source"}),
		collected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paddock_host_collected_total",
			Help: "Output collections (a task's output files taken from its guest), by result (ok, error)."}, []string{"result"}),
		collectedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_collected_bytes_total",
			Help: "Bytes of output files collected from guests."}),
		peerBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_peer_fetched_bytes_total",
			Help: "Bytes of blobs fetched from peer hosts' caches (host.peer_fetch)."}),
		peerFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "paddock_host_peer_failures_total",
			Help: "Fetches from a peer host that failed mid-transfer and went on from the server."}),
	}
	for _, c := range []prometheus.Collector{m.staged, m.stagedBytes, m.collected, m.collectedBytes, m.peerBytes, m.peerFailures} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering data path metrics: %w", err)
		}
	}
	for _, r := range []string{"ok", "error"} {
		m.staged.WithLabelValues(r)
		m.collected.WithLabelValues(r)
	}
	m.stagedBytes.WithLabelValues("fetched")
	m.stagedBytes.WithLabelValues("cached")
	return m, nil
}
