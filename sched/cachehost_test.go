package sched_test

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/hostd/cache"
	"github.com/paddockvm/paddock/hostd/link"
	"github.com/paddockvm/paddock/sched"
)

// cacheHost is a host daemon's data plane with the real host cache (hostd/cache) over the
// server's blob RPCs (hostd/link, mutual TLS on the cluster port): it stages a task's
// inputs into its guests' input share with cache.Link, collects outputs with
// cache.Ingest (write-through), and sends its cache summary with a status every 2s and
// within summaryMinGap of a change, as hostd does. Its "guests" are in-process agents
// (agent/session) relayed over the host's link, each with the shared data path. Only
// the VMs are missing.
type cacheHost struct {
	*fakeHost
	id              string
	c               *cache.Cache
	ready           chan struct{} // closed once c is open
	inRoot, outRoot string
	sendMu          sync.Mutex
	fetched         atomic.Int64 // bytes read from the server's blob store
	hits, misses    atomic.Int64 // cache.Link results
	seenMu          sync.Mutex
	seen            map[string]int  // staged input digests, with their counts
	hitTasks        map[string]bool // tasks whose every input was a cache hit
}

// countingSource counts the bytes read from a cache Source.
type countingSource struct {
	cache.Source
	n *atomic.Int64
}

func (s countingSource) Open(ctx context.Context, d blob.Digest, off int64) (io.ReadCloser, error) {
	rc, err := s.Source.Open(ctx, d, off)
	if err != nil {
		return nil, err
	}
	return countingRC{rc, s.n}, nil
}

type countingRC struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r countingRC) Read(p []byte) (int, error) {
	k, err := r.ReadCloser.Read(p)
	r.n.Add(int64(k))
	return k, err
}

// summaryMinGap is hostd.SummaryMinGap (not imported: hostd brings the VM pool along).
const summaryMinGap = 100 * time.Millisecond

func startCacheHost(tb testing.TB, cs *clusterServer, id string, diskBytes int64) *cacheHost {
	tb.Helper()
	root := tb.TempDir() // one filesystem: the cache hard-links into the shares
	ch := &cacheHost{id: id, ready: make(chan struct{}), inRoot: filepath.Join(root, "in"), outRoot: filepath.Join(root, "out")}
	for _, d := range []string{ch.inRoot, ch.outRoot} { // the guests' shares exist before any task, as hostd's do
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	h, err := connectHostWith(tb, cs, id, id, hostOpts{caps: []string{sched.CapStage}, handle: ch.handle})
	if err != nil {
		tb.Fatal(err)
	}
	ch.fakeHost = h
	cfg := cache.DefaultConfig()
	cfg.Dir, cfg.MemoryBytes, cfg.DiskBytes = filepath.Join(root, "cache"), 0, diskBytes
	bl := link.NewBlobs(h.client)
	if ch.c, err = cache.Open(cfg, countingSource{bl, &ch.fetched}, bl, nil); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ch.c.Close() })
	close(ch.ready)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	go func() { // as hostd's sender: a status every 2s, and one within 100ms of a change of the summary
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		var last time.Time
		var soon <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch.c.Changes():
				if soon == nil {
					soon = time.After(max(0, summaryMinGap-time.Since(last)))
				}
				continue
			case <-soon:
				soon = nil
			case <-t.C:
			}
			last = time.Now()
			st := &hostv1.Status{}
			for _, d := range ch.c.Largest(1024) {
				st.CachedBlobs = append(st.CachedBlobs, string(d))
			}
			ch.send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Status{Status: st}})
		}
	}()
	return ch
}

func (ch *cacheHost) send(m *hostv1.HostMessage) {
	ch.sendMu.Lock()
	defer ch.sendMu.Unlock()
	ch.ctl.Send(m)
}

// guests starts n agents relayed by the host, each running ex.
func (ch *cacheHost) guests(tb testing.TB, n int, ex session.Executor) {
	for i := 0; i < n; i++ {
		name := ch.id + "-g" + string(rune('a'+i))
		runAgent(tb, session.Config{AgentID: name, Host: name, InRoot: ch.inRoot, OutRoot: ch.outRoot, ReconnectMin: 20 * time.Millisecond,
			Dial: func(ctx context.Context) (net.Conn, error) { return link.OpenRelay(ctx, ch.client, name, "p") }}, ex)
	}
}

func (ch *cacheHost) handle(h *fakeHost, m *hostv1.ServerMessage) {
	ctx := context.Background()
	if e := m.GetTaskEvent(); e != nil && e.GetKind() == hostv1.TaskEvent_KIND_STARTED && len(e.GetInputs()) > 0 {
		go func() {
			<-ch.ready
			dir := filepath.Join(ch.inRoot, guestabi.LeaseDir(e.GetTaskId(), e.GetLeaseId()))
			marker := guestabi.Marker{OK: true, Sizes: map[string]int64{}}
			staged := &hostv1.Staged{Guest: e.GetGuest(), TaskId: e.GetTaskId(), LeaseId: e.GetLeaseId()}
			err := os.MkdirAll(dir, 0o755)
			for name, ref := range e.GetInputs() {
				if err != nil {
					break
				}
				ch.seenMu.Lock()
				if ch.seen == nil {
					ch.seen = map[string]int{}
				}
				ch.seen[ref.GetDigest()]++
				ch.seenMu.Unlock()
				var res cache.LinkResult
				res, err = ch.c.Link(ctx, blob.Digest(ref.GetDigest()), ref.GetSize(), filepath.Join(dir, name))
				if err != nil {
					break
				}
				if res.Hit {
					ch.hits.Add(1)
					staged.CachedBytes += ref.GetSize()
				} else {
					ch.misses.Add(1)
					staged.FetchedBytes += max(res.FetchedBytes, 1)
				}
				marker.Sizes[name] = ref.GetSize()
			}
			if err != nil {
				marker, staged.Error = guestabi.Marker{Error: err.Error(), Retryable: true}, err.Error()
			}
			if err == nil && staged.FetchedBytes == 0 && staged.CachedBytes > 0 {
				ch.seenMu.Lock()
				if ch.hitTasks == nil {
					ch.hitTasks = map[string]bool{}
				}
				ch.hitTasks[e.GetTaskId()] = true
				ch.seenMu.Unlock()
			}
			tmp := filepath.Join(dir, guestabi.MarkerName+".tmp") // as hostd: the agent never reads half a marker
			if os.WriteFile(tmp, marker.Encode(), 0o644) == nil {
				os.Rename(tmp, filepath.Join(dir, guestabi.MarkerName))
			}
			ch.send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Staged{Staged: staged}})
		}()
	}
	if e := m.GetTaskEvent(); e != nil && e.GetKind() == hostv1.TaskEvent_KIND_FINISHED {
		lease := guestabi.LeaseDir(e.GetTaskId(), e.GetLeaseId())
		os.RemoveAll(filepath.Join(ch.inRoot, lease))
		os.RemoveAll(filepath.Join(ch.outRoot, lease))
	}
	if c := m.GetCollect(); c != nil {
		go func() {
			<-ch.ready
			res := &hostv1.Collected{RequestId: c.GetRequestId()}
			for name, ref := range c.GetOutputs() {
				p := filepath.Join(ch.outRoot, guestabi.LeaseDir(c.GetTaskId(), c.GetLeaseId()), name)
				if err := ch.c.Ingest(ctx, p, blob.Digest(ref.GetDigest()), ref.GetSize()); err != nil {
					res.Error, res.Retryable = err.Error(), true
					break
				}
			}
			ch.send(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Collected{Collected: res}})
		}()
	}
}

// dataHandlers serves "touch" (stats its input "in" and sleeps 20ms: a task whose cost
// is getting its input), "compress" (gzips "in" into the output file "out") and
// "checksum" (the sha256 of "in", as the inline output).
func dataHandlers(slots int) *fakeExec {
	return &fakeExec{types: []session.TaskType{{Name: "touch", Concurrency: slots}, {Name: "compress", Concurrency: slots}, {Name: "checksum", Concurrency: slots}},
		fn: func(ctx context.Context, t session.Task) session.Result {
			in, ok := t.InputFiles["in"]
			if !ok {
				return session.Result{Error: "no input file \"in\""}
			}
			switch t.Type {
			case "touch":
				if _, err := os.Stat(in.Path); err != nil {
					return session.Result{Error: err.Error()}
				}
				time.Sleep(20 * time.Millisecond)
				return session.Result{Output: []byte("ok")}
			case "compress":
				return gzipFile(in.Path, filepath.Join(t.OutputDir, "out"))
			default:
				f, err := os.Open(in.Path)
				if err != nil {
					return session.Result{Error: err.Error()}
				}
				defer f.Close()
				h := sha256.New()
				if _, err := io.Copy(h, f); err != nil {
					return session.Result{Error: err.Error()}
				}
				return session.Result{Output: []byte(hex.EncodeToString(h.Sum(nil)))}
			}
		}}
}

func gzipFile(src, dst string) session.Result {
	in, err := os.Open(src)
	if err != nil {
		return session.Result{Error: err.Error()}
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return session.Result{Error: err.Error()}
	}
	defer out.Close()
	h := sha256.New()
	n := &countW{}
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(out, h, n), gzip.BestSpeed)
	if _, err := io.Copy(zw, in); err != nil {
		return session.Result{Error: err.Error()}
	}
	if err := zw.Close(); err != nil {
		return session.Result{Error: err.Error()}
	}
	return session.Result{Output: []byte("ok"), OutputFiles: map[string]session.OutputFile{
		"out": {Size: n.n, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil))}}}
}

type countW struct{ n int64 }

func (c *countW) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// hit reports whether the host staged every input of task id from its cache.
func (ch *cacheHost) hit(id string) bool {
	ch.seenMu.Lock()
	defer ch.seenMu.Unlock()
	return ch.hitTasks[id]
}
