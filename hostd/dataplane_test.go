package hostd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/hostd/bwshare"
	"github.com/paddockvm/paddock/hostd/cache"
	"github.com/paddockvm/paddock/vmpool"
)

// fakeServer is the server's blob store for the cache: blobs in memory, a switch
// that makes every read fail as an unreachable server does, a gate that holds reads.
type fakeServer struct {
	mu    sync.Mutex // guards the fields below
	blobs map[blob.Digest][]byte
	down  bool
	gate  chan struct{} // when set, Open waits for it (or ctx)
}

func (s *fakeServer) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	s.mu.Lock()
	b, ok := s.blobs[d]
	down, gate := s.down, s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if down {
		return nil, fmt.Errorf("%w: the server is unreachable (test)", blob.ErrUnavailable)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	return io.NopCloser(bytes.NewReader(b[offset:])), nil
}

func (s *fakeServer) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return blob.Info{}, fmt.Errorf("%w: %s", blob.ErrNotFound, d)
	}
	return blob.Info{Digest: d, Size: int64(len(b))}, nil
}

func (s *fakeServer) Put(ctx context.Context, d blob.Digest, size int64, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[d] = b
	return nil
}

func (s *fakeServer) add(b []byte) blob.Digest {
	d := blob.FromBytes(b)
	s.mu.Lock()
	s.blobs[d] = b
	s.mu.Unlock()
	return d
}

func (s *fakeServer) has(d blob.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[d]
	return ok
}

// dpEnv is a data path over a real cache (fake server behind it) and one guest whose
// shares are temporary directories.
type dpEnv struct {
	t    *testing.T
	srv  *fakeServer
	c    *cache.Cache
	dp   *dataPath
	g    vmpool.GuestRef
	sent chan *hostv1.HostMessage
	reg  *prometheus.Registry
}

func newDPEnv(t *testing.T) *dpEnv {
	t.Helper()
	return newDPEnvShaped(t, nil)
}

// newDPEnvShaped is newDPEnv with the cache's transfers shaped by sh (nil: not shaped).
func newDPEnvShaped(t *testing.T, sh *bwshare.Shaper) *dpEnv {
	t.Helper()
	dir := t.TempDir()
	e := &dpEnv{t: t, srv: &fakeServer{blobs: map[blob.Digest][]byte{}}, sent: make(chan *hostv1.HostMessage, 100), reg: prometheus.NewPedanticRegistry()}
	cfg := cache.DefaultConfig()
	cfg.Dir = filepath.Join(dir, "cache")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	var err error
	var src cache.Source = e.srv
	var sink cache.Sink = e.srv
	if sh != nil {
		src, sink = cache.Shaped(e.srv, e.srv, sh)
	}
	if e.c, err = cache.Open(cfg, src, sink, e.reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.c.Close() })
	e.g = vmpool.GuestRef{Name: "paddock-p-00000001", Pool: "p", InDir: filepath.Join(dir, "g", "in"), OutDir: filepath.Join(dir, "g", "out")}
	for _, d := range []string{e.g.InDir, e.g.OutDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	met, err := newDataMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	guests := func(name string) (vmpool.GuestRef, bool) { return e.g, name == e.g.Name }
	e.dp = newDataPath(e.c, guests, func(m *hostv1.HostMessage) { e.sent <- m }, slog.New(slog.NewTextHandler(io.Discard, nil)), met)
	if sh != nil {
		e.dp.classify = sh.Classify
	}
	t.Cleanup(e.dp.wait)
	return e
}

func (e *dpEnv) next() *hostv1.HostMessage {
	e.t.Helper()
	select {
	case m := <-e.sent:
		return m
	case <-time.After(30 * time.Second):
		e.t.Fatal("nothing sent to the server")
		return nil
	}
}

// stage sends KIND_STARTED and returns the Staged answer and the marker.
func (e *dpEnv) stage(task string, lease uint64, inputs map[string]*hostv1.BlobRef) (*hostv1.Staged, guestabi.Marker) {
	e.t.Helper()
	e.dp.started(context.Background(), &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: task, LeaseId: lease, Inputs: inputs})
	st := e.next().GetStaged()
	if st == nil || st.GetTaskId() != task || st.GetLeaseId() != lease || st.GetGuest() != e.g.Name {
		e.t.Fatalf("sent %v, want Staged for %s.%d", st, task, lease)
	}
	b, err := os.ReadFile(filepath.Join(e.g.InDir, guestabi.LeaseDir(task, lease), guestabi.MarkerName))
	if err != nil {
		e.t.Fatalf("no marker: %v", err)
	}
	m, err := guestabi.DecodeMarker(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return st, m
}

func ref(d blob.Digest, n int) *hostv1.BlobRef {
	return &hostv1.BlobRef{Digest: string(d), Size: int64(n)}
}

func TestStageInputs(t *testing.T) {
	e := newDPEnv(t)
	a, b := []byte("first input"), bytes.Repeat([]byte("x"), 100_000)
	da, db := e.srv.add(a), e.srv.add(b)
	st, m := e.stage("task-1", 7, map[string]*hostv1.BlobRef{"a": ref(da, len(a)), "b.bin": ref(db, len(b))})
	if st.GetError() != "" || !m.OK || m.Sizes["a"] != int64(len(a)) || m.Sizes["b.bin"] != int64(len(b)) {
		t.Fatalf("staged %v, marker %+v", st, m)
	}
	if st.GetFetchedBytes() != int64(len(a)+len(b)) || st.GetCachedBytes() != 0 {
		t.Errorf("first staging: fetched %d cached %d, want %d fetched", st.GetFetchedBytes(), st.GetCachedBytes(), len(a)+len(b))
	}
	dir := filepath.Join(e.g.InDir, "task-1.7")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != leaseDirMode {
		t.Errorf("lease dir %v %v, want mode %v", fi, err, os.FileMode(leaseDirMode))
	}
	for name, want := range map[string][]byte{"a": a, "b.bin": b} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("staged %s: %d bytes, %v", name, len(got), err)
		}
		if fi, _ := os.Stat(filepath.Join(dir, name)); fi.Mode().Perm()&0o004 == 0 {
			t.Errorf("staged %s is not world-readable (%v): QEMU cannot read it", name, fi.Mode())
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, guestabi.MarkerName)); fi.Mode().Perm() != markerMode {
		t.Errorf("marker mode %v", fi.Mode())
	}
	if _, err := os.Stat(filepath.Join(dir, guestabi.MarkerName+".tmp")); !os.IsNotExist(err) {
		t.Errorf("the marker's temporary file is left: %v", err)
	}

	// The same inputs for another lease: all from the cache.
	st, m = e.stage("task-2", 1, map[string]*hostv1.BlobRef{"in": ref(db, len(b))})
	if st.GetError() != "" || !m.OK || st.GetFetchedBytes() != 0 || st.GetCachedBytes() != int64(len(b)) {
		t.Errorf("second staging: %v, marker %+v; want all %d bytes cached", st, m, len(b))
	}
	if v := testutil.ToFloat64(e.dp.met.staged.WithLabelValues("ok")); v != 2 {
		t.Errorf("paddock_host_staged_total{result=ok} = %v", v)
	}
	if v := testutil.ToFloat64(e.dp.met.stagedBytes.WithLabelValues("cached")); v != float64(len(b)) {
		t.Errorf("paddock_host_staged_bytes_total{source=cached} = %v", v)
	}

	// KIND_FINISHED removes the lease's files from both shares.
	if err := os.MkdirAll(filepath.Join(e.g.OutDir, "task-1.7"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.dp.finished(&hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_FINISHED, Guest: e.g.Name, TaskId: "task-1", LeaseId: 7})
	e.dp.wait()
	for _, p := range []string{dir, filepath.Join(e.g.OutDir, "task-1.7")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after KIND_FINISHED: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(e.g.InDir, "task-2.1", "in")); err != nil {
		t.Errorf("another lease's input went too: %v", err)
	}
}

func TestStageFailures(t *testing.T) {
	e := newDPEnv(t)
	ok := e.srv.add([]byte("here"))
	missing := blob.FromBytes([]byte("not uploaded"))
	tests := []struct {
		name      string
		inputs    map[string]*hostv1.BlobRef
		down      bool
		retryable bool
		wantErr   string
	}{
		{"missing blob", map[string]*hostv1.BlobRef{"a": ref(ok, 4), "b": ref(missing, 12)}, false, false, string(missing)},
		{"server down", map[string]*hostv1.BlobRef{"c": ref(blob.FromBytes([]byte("elsewhere")), 9)}, true, true, "fetching blob"},
		{"path escape", map[string]*hostv1.BlobRef{"../../escape": ref(ok, 4)}, false, false, "not a valid input name"},
		{"marker name", map[string]*hostv1.BlobRef{guestabi.MarkerName: ref(ok, 4)}, false, false, "not a valid input name"},
		{"wrong size", map[string]*hostv1.BlobRef{"a": ref(ok, 5)}, false, false, "not the 5 bytes"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.srv.mu.Lock()
			e.srv.down = tt.down
			e.srv.mu.Unlock()
			e.t = t
			st, m := e.stage("fail", uint64(i), tt.inputs)
			if m.OK || m.Retryable != tt.retryable || !strings.Contains(m.Error, tt.wantErr) || st.GetError() != m.Error {
				t.Errorf("marker %+v, Staged error %q: want an error naming %q, retryable %v", m, st.GetError(), tt.wantErr, tt.retryable)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(e.g.InDir), "escape")); !os.IsNotExist(err) {
				t.Errorf("an input escaped the lease directory: %v", err)
			}
		})
	}

	// A guest the host does not know: Staged says so.
	e.t = t
	e.dp.started(context.Background(), &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: "paddock-p-gone", TaskId: "t", LeaseId: 1, Inputs: map[string]*hostv1.BlobRef{"a": ref(ok, 4)}})
	if st := e.next().GetStaged(); !strings.Contains(st.GetError(), "gone") {
		t.Errorf("staging into an unknown guest: %v", st)
	}
	// A task id that would leave the share.
	e.dp.started(context.Background(), &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: "../../x", LeaseId: 1, Inputs: map[string]*hostv1.BlobRef{"a": ref(ok, 4)}})
	if st := e.next().GetStaged(); !strings.Contains(st.GetError(), "cannot name a directory") {
		t.Errorf("a task id with ..: %v", st)
	}
}

// TestStageDoesNotBlock: started returns while the server holds the fetch; the lease's
// KIND_FINISHED cancels it, a Staged with an error is still sent, and the files go.
func TestStageDoesNotBlock(t *testing.T) {
	e := newDPEnv(t)
	d := e.srv.add([]byte("slow"))
	e.srv.mu.Lock()
	e.srv.gate = make(chan struct{})
	e.srv.mu.Unlock()
	ev := &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: "slow", LeaseId: 3, Inputs: map[string]*hostv1.BlobRef{"a": ref(d, 4)}}
	e.dp.started(context.Background(), ev) // must return at once: the test would hang otherwise
	e.dp.finished(&hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_FINISHED, Guest: e.g.Name, TaskId: "slow", LeaseId: 3})
	st := e.next().GetStaged()
	if st == nil || st.GetError() == "" {
		t.Fatalf("a cancelled staging sent %v", st)
	}
	e.dp.wait()
	if _, err := os.Stat(filepath.Join(e.g.InDir, "slow.3")); !os.IsNotExist(err) {
		t.Errorf("the cancelled lease's directory is left: %v", err)
	}
}

// collect sends a Collect and returns the answer.
func (e *dpEnv) collect(task string, outputs map[string]*hostv1.BlobRef, maxBytes int64) *hostv1.Collected {
	e.t.Helper()
	e.dp.collect(context.Background(), &hostv1.Collect{RequestId: 42, Guest: e.g.Name, TaskId: task, LeaseId: 1, Outputs: outputs, MaxBytes: maxBytes})
	c := e.next().GetCollected()
	if c == nil || c.GetRequestId() != 42 {
		e.t.Fatalf("sent %v, want Collected 42", c)
	}
	return c
}

// writeOut writes an output file as the guest would.
func (e *dpEnv) writeOut(task, name string, b []byte) blob.Digest {
	e.t.Helper()
	dir := filepath.Join(e.g.OutDir, task+".1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return blob.FromBytes(b)
}

func TestCollect(t *testing.T) {
	e := newDPEnv(t)
	out := bytes.Repeat([]byte("output "), 50_000)
	d := e.writeOut("good", "result.bin", out)
	small := e.writeOut("good", "log.txt", []byte("done\n"))
	c := e.collect("good", map[string]*hostv1.BlobRef{"result.bin": ref(d, len(out)), "log.txt": ref(small, 5)}, 0)
	if c.GetError() != "" || len(c.GetPending()) != 0 {
		t.Fatalf("Collected %v", c)
	}
	if !e.srv.has(d) || !e.srv.has(small) {
		t.Error("write policy through: the outputs are not in the server's store")
	}
	if v := testutil.ToFloat64(e.dp.met.collectedBytes); v != float64(len(out)+5) {
		t.Errorf("paddock_host_collected_bytes_total = %v", v)
	}

	// A secret outside the share whose digest the guest knows.
	secret := []byte("host secret")
	secretPath := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretPath, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	ds := blob.FromBytes(secret)
	sdir := filepath.Join(t.TempDir(), "elsewhere")
	os.MkdirAll(sdir, 0o755)
	os.WriteFile(filepath.Join(sdir, "x"), secret, 0o644)

	lie := []byte("twelve bytes")
	tests := []struct {
		name      string
		setup     func() map[string]*hostv1.BlobRef
		max       int64
		retryable bool
		wantErr   string
	}{
		{"symlink output", func() map[string]*hostv1.BlobRef {
			os.MkdirAll(filepath.Join(e.g.OutDir, task("symlink output")+".1"), 0o755)
			os.Symlink(secretPath, filepath.Join(e.g.OutDir, task("symlink output")+".1", "x"))
			return map[string]*hostv1.BlobRef{"x": ref(ds, len(secret))}
		}, 0, false, "symbolic link"},
		{"symlink lease dir", func() map[string]*hostv1.BlobRef {
			os.Symlink(sdir, filepath.Join(e.g.OutDir, task("symlink lease dir")+".1"))
			return map[string]*hostv1.BlobRef{"x": ref(ds, len(secret))}
		}, 0, false, "symbolic link"},
		{"fifo", func() map[string]*hostv1.BlobRef {
			os.MkdirAll(filepath.Join(e.g.OutDir, task("fifo")+".1"), 0o755)
			if err := syscall.Mkfifo(filepath.Join(e.g.OutDir, task("fifo")+".1", "x"), 0o644); err != nil {
				t.Fatal(err)
			}
			return map[string]*hostv1.BlobRef{"x": ref(ds, len(secret))}
		}, 0, false, "not a regular file"},
		{"path escape", func() map[string]*hostv1.BlobRef {
			e.writeOut(task("path escape"), "y", secret)
			return map[string]*hostv1.BlobRef{"../../../secret": ref(ds, len(secret))}
		}, 0, false, "not a valid output name"},
		{"size mismatch", func() map[string]*hostv1.BlobRef {
			e.writeOut(task("size mismatch"), "x", lie)
			return map[string]*hostv1.BlobRef{"x": ref(blob.FromBytes(lie), len(lie)+1)}
		}, 0, false, "agent reported 13"},
		{"digest mismatch", func() map[string]*hostv1.BlobRef {
			e.writeOut(task("digest mismatch"), "x", lie)
			return map[string]*hostv1.BlobRef{"x": ref(blob.FromBytes([]byte("twelve bytez")), len(lie))}
		}, 0, false, "does not match"},
		{"missing file", func() map[string]*hostv1.BlobRef {
			e.writeOut(task("missing file"), "x", lie)
			return map[string]*hostv1.BlobRef{"x": ref(blob.FromBytes(lie), len(lie)), "y": ref(blob.FromBytes(lie), len(lie))}
		}, 0, true, `output "y": no such file`},
		{"no output directory", func() map[string]*hostv1.BlobRef {
			return map[string]*hostv1.BlobRef{"x": ref(blob.FromBytes(lie), len(lie))}
		}, 0, true, "no output written"},
		{"over the limit", func() map[string]*hostv1.BlobRef {
			e.writeOut(task("over the limit"), "x", lie)
			return map[string]*hostv1.BlobRef{"x": ref(blob.FromBytes(lie), len(lie))}
		}, 11, false, "more than the limit of 11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			c := e.collect(task(tt.name), tt.setup(), tt.max)
			if c.GetError() == "" || c.GetRetryable() != tt.retryable || !strings.Contains(c.GetError(), tt.wantErr) {
				t.Errorf("Collected %v: want an error with %q, retryable %v", c, tt.wantErr, tt.retryable)
			}
			if e.srv.has(ds) {
				t.Fatal("the host's secret reached the server's blob store")
			}
		})
	}
	e.t = t
	if e.srv.has(blob.FromBytes([]byte("twelve bytez"))) {
		t.Error("a mismatching output was stored")
	}
}

func TestOutbox(t *testing.T) {
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	o := newOutbox(slog.New(slog.NewTextHandler(io.Discard, nil)), dropped)
	msg := func(i int) *hostv1.HostMessage {
		return &hostv1.HostMessage{Msg: &hostv1.HostMessage_Collected{Collected: &hostv1.Collected{RequestId: uint64(i)}}}
	}
	o.put(msg(1))
	o.put(msg(2))
	select {
	case <-o.wake:
	default:
		t.Fatal("no wake-up after put")
	}
	got := o.take()
	o.put(msg(3))
	o.putBack(got[1:]) // 2 was not sent
	var ids []uint64
	for _, m := range o.take() {
		ids = append(ids, m.GetCollected().GetRequestId())
	}
	if fmt.Sprint(ids) != "[2 3]" {
		t.Errorf("after a failed send: %v, want [2 3]", ids)
	}
	for i := range outboxMax + 2 {
		o.put(msg(i))
	}
	if q := o.take(); len(q) != outboxMax || q[0].GetCollected().GetRequestId() != 2 || testutil.ToFloat64(dropped) != 2 {
		t.Errorf("overflow: %d queued, first %v, %v dropped", len(q), q[0], testutil.ToFloat64(dropped))
	}
}

// task makes a subtest's name a task id.
func task(name string) string { return strings.ReplaceAll(name, " ", "-") }

// TestTransferClasses: a task's input fetch and output upload run in the bandwidth class
// its tenant (when configured) or its service class names.
func TestTransferClasses(t *testing.T) {
	sh, err := bwshare.New(bwshare.Config{Capacity: 1e9, Classes: map[string]bwshare.Class{
		"acme": {Min: 1e6, Weight: 1}, "online": {Min: 1e6, Weight: 1}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newDPEnvShaped(t, sh)
	in := bytes.Repeat([]byte("input "), 20_000)
	d := e.srv.add(in)
	e.dp.started(context.Background(), &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: e.g.Name, TaskId: "t1", LeaseId: 1,
		Inputs: map[string]*hostv1.BlobRef{"in": ref(d, len(in))}, Tenant: "bob", TaskClass: "online"})
	if st := e.next().GetStaged(); st == nil || st.GetError() != "" {
		t.Fatalf("staged %v", st)
	}
	out := bytes.Repeat([]byte("output "), 30_000)
	od := e.writeOut("t2", "out.bin", out)
	e.dp.collect(context.Background(), &hostv1.Collect{RequestId: 7, Guest: e.g.Name, TaskId: "t2", LeaseId: 1,
		Outputs: map[string]*hostv1.BlobRef{"out.bin": ref(od, len(out))}, Tenant: "acme", TaskClass: "online"})
	if c := e.next().GetCollected(); c == nil || c.GetError() != "" {
		t.Fatalf("collected %v", c)
	}
	if got := sh.Bytes("online"); got != int64(len(in)) {
		t.Errorf("class online moved %d bytes, want the input's %d (tenant bob has no class)", got, len(in))
	}
	if got := sh.Bytes("acme"); got != int64(len(out)) {
		t.Errorf("class acme moved %d bytes, want the output's %d", got, len(out))
	}
	if got := sh.Bytes(bwshare.DefaultClass); got != 0 {
		t.Errorf("class default moved %d bytes, want 0", got)
	}
}

// TestPeerWiring: host.peers is checked; a host's cache served by servePeers is the
// peer another host's peerSource fetches from (HTTP on loopback), with the digest checked.
func TestPeerWiring(t *testing.T) {
	for _, tc := range []struct {
		peers []string
		want  string
	}{{nil, "host.peers is empty"}, {[]string{"host2:7074"}, `host.peers: "host2:7074"`}, {[]string{"ftp://h"}, "want a URL"}} {
		if err := CheckPeers(true, tc.peers); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckPeers(true, %q) = %v, want %q", tc.peers, err, tc.want)
		}
	}
	if err := CheckPeers(false, nil); err != nil {
		t.Errorf("peer fetch off: %v", err)
	}
	// Host B caches a blob and serves it to peers.
	b := newDPEnv(t)
	data := bytes.Repeat([]byte("peer "), 400_000)
	d := b.srv.add(data)
	if _, err := b.c.Link(context.Background(), d, int64(len(data)), filepath.Join(t.TempDir(), "x")); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, addr, err := servePeers("127.0.0.1:0", b.c, log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Host A's source: the peer, then its server (which lacks the blob here: the bytes
	// can only come from the peer).
	met, err := newDataMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	store := &fakeServer{blobs: map[blob.Digest][]byte{}}
	src, err := peerSource(Config{PeerFetch: true, Peers: []string{"http://" + addr}}, store, log, met)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cache.DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "cache")
	cfg.Logger = log
	a, err := cache.Open(cfg, src, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	dst := filepath.Join(t.TempDir(), "in")
	if _, err := a.Link(context.Background(), d, int64(len(data)), dst); err != nil {
		t.Fatalf("fetch from the peer: %v", err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("the fetched file differs from the blob")
	}
	if v := testutil.ToFloat64(met.peerBytes); v != float64(len(data)) {
		t.Errorf("paddock_host_peer_fetched_bytes_total = %v, want %d", v, len(data))
	}
}
