package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/internal/testutil"
)

// checkFile fails t unless the file at path holds want.
func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s holds %d bytes that differ from the blob's %d", path, len(got), len(want))
	}
}

func TestLinkFetchesOnceThenHits(t *testing.T) {
	src := newMemSource()
	data := randBytes(1, 100_000)
	d := src.add(data)
	cfg := testConfig(t)
	reg := prometheus.NewRegistry()
	c, err := Open(cfg, src, newMemSink(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := t.TempDir()
	ctx := context.Background()

	res, err := c.Link(ctx, d, int64(len(data)), filepath.Join(out, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Hit || res.Tier != TierSource || res.FetchedBytes != int64(len(data)) || res.Copied {
		t.Fatalf("first Link = %+v; want a miss that fetched %d bytes", res, len(data))
	}
	res, err = c.Link(ctx, d, -1, filepath.Join(out, "b")) // size asked from the Source
	if err != nil {
		t.Fatal(err)
	}
	if !res.Hit || res.Tier != TierDisk || res.FetchedBytes != 0 {
		t.Fatalf("second Link = %+v; want a disk hit with 0 bytes fetched", res)
	}
	if got := src.served.Load(); got != int64(len(data)) {
		t.Fatalf("the source served %d bytes; want %d (one fetch)", got, len(data))
	}
	checkFile(t, filepath.Join(out, "b"), data)
	// dst is a hard link of the disk tier's file, readable by QEMU's user.
	a, _ := os.Stat(filepath.Join(out, "b"))
	b, _ := os.Stat(c.path(d))
	if !os.SameFile(a, b) {
		t.Fatal("dst is not a hard link of the disk tier's file")
	}
	if a.Mode().Perm() != 0o644 {
		t.Fatalf("blob file mode %v; want 0644", a.Mode().Perm())
	}
	for dir := filepath.Dir(c.path(d)); dir != filepath.Dir(cfg.Dir); dir = filepath.Dir(dir) {
		if st, _ := os.Stat(dir); st.Mode().Perm() != 0o755 {
			t.Fatalf("%s mode %v; want 0755", dir, st.Mode().Perm())
		}
	}
	// Linking again over an existing dst replaces it.
	os.WriteFile(filepath.Join(out, "c"), []byte("old"), 0o644)
	if _, err := c.Link(ctx, d, int64(len(data)), filepath.Join(out, "c")); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(out, "c"), data)
	if got := promtest.ToFloat64(c.met.hits.WithLabelValues(TierDisk)); got != 2 {
		t.Errorf("disk hits = %v; want 2", got)
	}
	if got := promtest.ToFloat64(c.met.misses); got != 1 {
		t.Errorf("misses = %v; want 1", got)
	}
	if got := promtest.ToFloat64(c.met.fetched); got != float64(len(data)) {
		t.Errorf("fetched bytes = %v; want %d", got, len(data))
	}
	if n, err := promtest.GatherAndCount(reg, "paddock_host_cache_hits_total", "paddock_host_cache_bytes", "paddock_host_cache_pending_uploads"); err != nil || n != 5 {
		t.Errorf("registered series = %d, %v; want 5", n, err)
	}
	if _, err := c.Link(ctx, blob.FromBytes([]byte("nobody has this")), 15, filepath.Join(out, "d")); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Link of a blob the server lacks: %v; want ErrNotFound", err)
	}
	if _, err := c.Link(ctx, "sha256:nothex", 1, filepath.Join(out, "e")); !errors.Is(err, blob.ErrInvalid) {
		t.Errorf("Link of a malformed digest: %v; want ErrInvalid", err)
	}
}

func TestLinkConcurrentFetchesOnce(t *testing.T) {
	src := newMemSource()
	data := randBytes(2, 300_000)
	d := src.add(data)
	src.gate = make(chan struct{})
	c := mustOpen(t, testConfig(t), src, newMemSink())
	out := t.TempDir()
	const callers = 8
	var wg sync.WaitGroup
	results := make([]LinkResult, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = c.Link(context.Background(), d, int64(len(data)), filepath.Join(out, string(rune('a'+i))))
		}()
	}
	// Wait until the flight's Open is blocked at the gate and every caller has joined.
	for {
		c.mu.Lock()
		f := c.flights[d]
		joined := f != nil && f.waiters == callers
		c.mu.Unlock()
		if joined && src.opens.Load() == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(src.gate)
	wg.Wait()
	var fetched int64
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		fetched += results[i].FetchedBytes
		checkFile(t, filepath.Join(out, string(rune('a'+i))), data)
	}
	if src.opens.Load() != 1 || src.served.Load() != int64(len(data)) || fetched != int64(len(data)) {
		t.Fatalf("opens %d, served %d, fetched (sum over callers) %d; want 1 fetch of %d bytes", src.opens.Load(), src.served.Load(), fetched, len(data))
	}
	c.mu.Lock()
	pins := c.files[d].pins
	c.mu.Unlock()
	if pins != 0 {
		t.Fatalf("the entry has %d pins after every caller finished; want 0", pins)
	}
}

func TestLinkCancelledWaiterDoesNotStopOthers(t *testing.T) {
	src := newMemSource()
	data := randBytes(3, 50_000)
	d := src.add(data)
	src.gate = make(chan struct{})
	c := mustOpen(t, testConfig(t), src, newMemSink())
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Link(ctx, d, int64(len(data)), filepath.Join(out, "a"))
		first <- err
	}()
	second := make(chan error, 1)
	for src.opens.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	go func() {
		_, err := c.Link(context.Background(), d, int64(len(data)), filepath.Join(out, "b"))
		second <- err
	}()
	for {
		c.mu.Lock()
		n := c.flights[d].waiters
		c.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v; want context.Canceled", err)
	}
	close(src.gate)
	if err := <-second; err != nil {
		t.Fatalf("the other caller: %v", err)
	}
	checkFile(t, filepath.Join(out, "b"), data)
}

func TestLinkRefusesCorruptSource(t *testing.T) {
	src := newMemSource()
	data := randBytes(4, 70_000)
	d := src.add(data)
	src.corrupt[d] = true
	c := mustOpen(t, testConfig(t), src, newMemSink())
	dst := filepath.Join(t.TempDir(), "x")
	_, err := c.Link(context.Background(), d, int64(len(data)), dst)
	if !errors.Is(err, blob.ErrMismatch) || !strings.Contains(err.Error(), string(d)) {
		t.Fatalf("Link of corrupt bytes: %v; want ErrMismatch naming %s", err, d)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("dst exists after a refused fetch: %v", err)
	}
	if names := dirNames(t, c.cfg.Dir); len(names) != 1 || names[0] != "lock" {
		t.Fatalf("the cache directory holds %v after a refused fetch; want only the lock", names)
	}
	if st := c.Stats(); st.DiskBlobs != 0 || st.DiskBytes != 0 {
		t.Fatalf("Stats = %+v after a refused fetch; want nothing", st)
	}
	// A wrong size is refused too, and so is a source longer than the size named.
	delete(src.corrupt, d)
	for _, size := range []int64{int64(len(data)) + 1, int64(len(data)) - 1} {
		if _, err := c.Link(context.Background(), d, size, dst); !errors.Is(err, blob.ErrMismatch) {
			t.Fatalf("Link with size %d (blob is %d): %v; want ErrMismatch", size, len(data), err)
		}
	}
	if st := c.Stats(); st.DiskBlobs != 0 || st.DiskBytes != 0 {
		t.Fatalf("Stats = %+v after refused fetches; want nothing", st)
	}
}

func TestLinkResumesCutDownload(t *testing.T) {
	src := newMemSource()
	data := randBytes(5, 10_000)
	d := src.add(data)
	src.cut = 1500 // every response stops after 1500 bytes
	c := mustOpen(t, testConfig(t), src, newMemSink())
	c.fetchRetry = time.Microsecond
	dst := filepath.Join(t.TempDir(), "x")
	res, err := c.Link(context.Background(), d, int64(len(data)), dst)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, dst, data)
	if src.served.Load() != int64(len(data)) || res.FetchedBytes != int64(len(data)) || src.opens.Load() != 7 {
		t.Fatalf("served %d bytes in %d opens (result %+v); want %d bytes in 7 resumed opens", src.served.Load(), src.opens.Load(), res, len(data))
	}
}

func TestRestartKeepsDiskTier(t *testing.T) {
	old := verifyAtOpenMax
	verifyAtOpenMax = 20_000
	defer func() { verifyAtOpenMax = old }()
	src := newMemSource()
	small, smallBad := randBytes(6, 10_000), randBytes(7, 10_000)
	large, largeBad := randBytes(8, 50_000), randBytes(9, 50_000)
	all := [][]byte{small, smallBad, large, largeBad}
	var ds []blob.Digest
	for _, b := range all {
		ds = append(ds, src.add(b))
	}
	cfg := testConfig(t)
	out := t.TempDir()
	ctx := context.Background()
	c, err := Open(cfg, src, newMemSink(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if _, err := c.Link(ctx, d, int64(len(all[i])), filepath.Join(out, "first")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(cfg, src, newMemSink(), nil); err == nil {
		t.Fatal("a second Cache opened the same directory")
	}
	c.Close()
	// Damage two files, and leave a partial download behind.
	for _, d := range []blob.Digest{ds[1], ds[3]} {
		f, err := os.OpenFile(c.path(d), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("garbage"), 100)
		f.Close()
	}
	os.WriteFile(filepath.Join(cfg.Dir, "tmp", ds[0].Hex()+".part"), small[:10], 0o644)
	served := src.served.Load()

	c = mustOpen(t, cfg, src, newMemSink())
	st := c.Stats()
	if st.DiskBlobs != 3 || st.DiskBytes != 110_000 {
		t.Fatalf("after restart Stats = %+v; want 3 blobs, 110000 bytes (the corrupt small file removed at Open, the large one not yet hashed)", st)
	}
	if _, err := os.Stat(c.path(ds[1])); !os.IsNotExist(err) {
		t.Fatal("the corrupt small file is still there")
	}
	if names := dirNames(t, filepath.Join(cfg.Dir, "tmp")); len(names) != 0 {
		t.Fatalf("tmp holds %v after Open; want nothing", names)
	}
	for i, d := range ds {
		res, err := c.Link(ctx, d, int64(len(all[i])), filepath.Join(out, "x"))
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, filepath.Join(out, "x"), all[i])
		wantHit := i == 0 || i == 2
		if res.Hit != wantHit {
			t.Errorf("blob %d after restart: %+v; want hit %v", i, res, wantHit)
		}
	}
	if got := src.served.Load() - served; got != 60_000 {
		t.Fatalf("after restart the source served %d bytes; want 60000 (the two damaged blobs again)", got)
	}
}

func TestIngestThrough(t *testing.T) {
	sink := newMemSink()
	c := mustOpen(t, testConfig(t), newMemSource(), sink)
	dir := t.TempDir()
	data := randBytes(10, 30_000)
	d := blob.FromBytes(data)
	path := filepath.Join(dir, "out")
	os.WriteFile(path, data, 0o600)
	if err := c.Ingest(context.Background(), path, d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if !sink.has(d) {
		t.Fatal("write policy through: the sink does not have the output when Ingest returned")
	}
	if has := c.Has(d); len(has) != 1 || has[0] != TierDisk {
		t.Fatalf("Has = %v; want [disk]", has)
	}
	if st, _ := os.Stat(c.path(d)); st.Mode().Perm() != 0o644 {
		t.Fatalf("ingested file mode %v; want 0644", st.Mode().Perm())
	}
	// Ingesting it again is fine; a file that is not the blob is refused and nothing kept.
	if err := c.Ingest(context.Background(), path, d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	other := randBytes(11, 30_000)
	os.WriteFile(path, other, 0o600)
	if err := c.Ingest(context.Background(), path, d, int64(len(data))); !errors.Is(err, blob.ErrMismatch) {
		t.Fatalf("Ingest of another file under a cached digest: %v; want ErrMismatch", err)
	}
	err := c.Ingest(context.Background(), path, blob.FromBytes(data[:10]), 10)
	if !errors.Is(err, blob.ErrMismatch) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Ingest of a file that is not the blob: %v; want ErrMismatch naming %s", err, path)
	}
	if st := c.Stats(); st.DiskBlobs != 1 || st.DiskBytes != int64(len(data)) {
		t.Fatalf("Stats = %+v; want only the first output", st)
	}
	if names := dirNames(t, filepath.Join(c.cfg.Dir, "tmp")); len(names) != 0 {
		t.Fatalf("tmp holds %v; want nothing", names)
	}
	sink.fail.Store(true)
	data2 := randBytes(12, 1000)
	os.WriteFile(path, data2, 0o600)
	if err := c.Ingest(context.Background(), path, blob.FromBytes(data2), 1000); !errors.Is(err, blob.ErrUnavailable) {
		t.Fatalf("Ingest with the server down (through): %v; want ErrUnavailable", err)
	}
}

func TestAsyncIngestSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	cfg.WritePolicy = WriteAsync
	sink := newMemSink()
	sink.fail.Store(true)
	c, err := Open(cfg, newMemSource(), sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var ds []blob.Digest
	var outs [][]byte
	for i := range 3 {
		data := randBytes(int64(20+i), 20_000+i)
		path := filepath.Join(dir, "out")
		os.WriteFile(path, data, 0o600)
		d := blob.FromBytes(data)
		if err := c.Ingest(context.Background(), path, d, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		ds, outs = append(ds, d), append(outs, data)
	}
	if p := c.Pending(); len(p) != 3 {
		t.Fatalf("Pending = %v; want 3", p)
	}
	// One upload attempt fails while the server is down; nothing is lost.
	ctx, cancel := context.WithCancel(context.Background())
	c.upload(ctx, ds[0])
	cancel()
	if len(c.Pending()) != 3 || sink.puts.Load() != 1 {
		t.Fatalf("after a failed upload: Pending %v, puts %d", c.Pending(), sink.puts.Load())
	}
	c.Close()
	os.WriteFile(filepath.Join(cfg.Dir, "pending", "junk"), []byte("{"), 0o644)

	sink.fail.Store(false)
	c = mustOpen(t, cfg, newMemSource(), sink)
	if p := c.Pending(); len(p) != 3 {
		t.Fatalf("after restart Pending = %v; want the 3 outputs", p)
	}
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	for len(c.Pending()) > 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for i, d := range ds {
		sink.mu.Lock()
		got := sink.got[d]
		sink.mu.Unlock()
		if !bytes.Equal(got, outs[i]) {
			t.Fatalf("output %d was not uploaded after the restart", i)
		}
	}
	if names := dirNames(t, filepath.Join(cfg.Dir, "pending")); len(names) != 0 {
		t.Fatalf("journal holds %v after the uploads; want nothing", names)
	}
	if got := promtest.ToFloat64(c.met.pending); got != 0 {
		t.Fatalf("pending gauge %v; want 0", got)
	}
}

func TestAsyncRunRetries(t *testing.T) {
	cfg := testConfig(t)
	cfg.WritePolicy = WriteAsync
	sink := newMemSink()
	sink.fail.Store(true)
	c := mustOpen(t, cfg, newMemSource(), sink)
	c.retryMin, c.retryMax = time.Millisecond, 4*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	data := randBytes(30, 5000)
	path := filepath.Join(t.TempDir(), "out")
	os.WriteFile(path, data, 0o600)
	d := blob.FromBytes(data)
	if err := c.Ingest(ctx, path, d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	for sink.puts.Load() < 3 { // Run retries with backoff
		time.Sleep(time.Millisecond)
	}
	sink.fail.Store(false)
	for len(c.Pending()) > 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if !sink.has(d) {
		t.Fatal("the output was not uploaded")
	}
}

func TestDiskFull(t *testing.T) {
	cfg := testConfig(t)
	cfg.DiskBytes = 10_000
	cfg.WritePolicy = WriteAsync
	sink := newMemSink()
	sink.fail.Store(true)
	src := newMemSource()
	c := mustOpen(t, cfg, src, sink)
	dir := t.TempDir()
	ingest := func(seed int64) error {
		data := randBytes(seed, 4000)
		path := filepath.Join(dir, "out")
		os.WriteFile(path, data, 0o600)
		return c.Ingest(context.Background(), path, blob.FromBytes(data), 4000)
	}
	for i := range 2 {
		if err := ingest(int64(40 + i)); err != nil {
			t.Fatal(err)
		}
	}
	// 8000 bytes wait for upload: neither a third output nor an input fits.
	err := ingest(42)
	if !errors.Is(err, ErrFull) || !errors.Is(err, blob.ErrUnavailable) || !strings.Contains(err.Error(), "host.cache_disk_bytes") {
		t.Fatalf("Ingest into a full disk tier: %v; want ErrFull naming host.cache_disk_bytes", err)
	}
	t.Log(err)
	in := randBytes(43, 3000)
	d := src.add(in)
	if _, err := c.Link(context.Background(), d, 3000, filepath.Join(dir, "in")); !errors.Is(err, ErrFull) {
		t.Fatalf("Link into a full disk tier: %v; want ErrFull", err)
	}
	big := src.add(randBytes(44, 20_000))
	if _, err := c.Link(context.Background(), big, 20_000, filepath.Join(dir, "big")); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "host.cache_disk_bytes") {
		t.Fatalf("Link of a blob larger than the budget: %v; want ErrFull naming host.cache_disk_bytes", err)
	}
	if st := c.Stats(); st.DiskBlobs != 2 || st.DiskBytes != 8000 || st.Pending != 2 {
		t.Fatalf("Stats = %+v; want the 2 pending outputs only", st)
	}
	if names := dirNames(t, filepath.Join(cfg.Dir, "tmp")); len(names) != 0 {
		t.Fatalf("tmp holds %v; want nothing", names)
	}
	// Once uploaded, they can be evicted and the input fits.
	sink.fail.Store(false)
	for _, p := range c.Pending() {
		c.upload(context.Background(), p)
	}
	if _, err := c.Link(context.Background(), d, 3000, filepath.Join(dir, "in")); err != nil {
		t.Fatalf("Link after the uploads: %v", err)
	}
	// A full disk (ENOSPC) is reported with the directory and the key.
	err = diskErr("fetching blob x", "/some/dir", &os.PathError{Op: "write", Path: "/some/dir/f", Err: syscall.ENOSPC})
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "/some/dir") || !strings.Contains(err.Error(), "host.cache_disk_bytes") {
		t.Fatalf("diskErr(ENOSPC) = %v", err)
	}
}

func TestMemoryTierBudget(t *testing.T) {
	cfg := testConfig(t)
	cfg.MemoryBytes = 64 << 10 // blobs up to 8 KiB enter
	src := newMemSource()
	c := mustOpen(t, cfg, src, newMemSink())
	dst := filepath.Join(t.TempDir(), "x")
	for i := range 40 {
		data := randBytes(int64(100+i), 4096+i)
		if _, err := c.Link(context.Background(), src.add(data), int64(len(data)), dst); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.MemoryBytes > cfg.MemoryBytes {
			t.Fatalf("after %d blobs the memory tier holds %d bytes; budget %d", i+1, st.MemoryBytes, cfg.MemoryBytes)
		}
	}
	if st := c.Stats(); st.MemoryBlobs != 15 || st.DiskBlobs != 40 {
		t.Fatalf("Stats = %+v; want 15 blobs in memory (64 KiB of ~4 KiB), 40 on disk", st)
	}
	if got := promtest.ToFloat64(c.met.evictions.WithLabelValues(TierMemory)); got != 25 {
		t.Fatalf("memory evictions = %v; want 25", got)
	}
	big := src.add(randBytes(200, 8193))
	if _, err := c.Link(context.Background(), big, 8193, dst); err != nil {
		t.Fatal(err)
	}
	if has := c.Has(big); len(has) != 1 || has[0] != TierDisk {
		t.Fatalf("a blob over host.cache_memory_bytes/8 is in %v; want only disk", has)
	}
}

func TestMemoryHit(t *testing.T) {
	cfg := testConfig(t)
	cfg.DiskBytes = 5000 // one blob
	src := newMemSource()
	a, b := randBytes(50, 4000), randBytes(51, 4000)
	da, db := src.add(a), src.add(b)
	c := mustOpen(t, cfg, src, newMemSink())
	dst := filepath.Join(t.TempDir(), "x")
	for _, d := range []blob.Digest{da, db} { // b evicts a from disk; memory keeps both
		if _, err := c.Link(context.Background(), d, 4000, dst); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.Link(context.Background(), da, 4000, dst)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Hit || res.Tier != TierMemory || res.FetchedBytes != 0 {
		t.Fatalf("Link = %+v; want a memory hit", res)
	}
	checkFile(t, dst, a)
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o644 {
		t.Fatalf("file written from memory has mode %v; want 0644", st.Mode().Perm())
	}
}

func TestReadPolicies(t *testing.T) {
	src := newMemSource()
	data := randBytes(60, 3000)
	d := src.add(data)
	dst := filepath.Join(t.TempDir(), "x")
	ctx := context.Background()
	for _, tc := range []struct {
		policy     string
		wantMemory bool // in memory after a restart and one disk hit
	}{{ReadCache, false}, {ReadPromote, true}} {
		t.Run(tc.policy, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ReadPolicy = tc.policy
			c, err := Open(cfg, src, newMemSink(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Link(ctx, d, 3000, dst); err != nil {
				t.Fatal(err)
			}
			c.Close()
			c = mustOpen(t, cfg, src, newMemSink()) // the memory tier starts empty
			res, err := c.Link(ctx, d, 3000, dst)
			if err != nil || res.Tier != TierDisk {
				t.Fatalf("Link = %+v, %v; want a disk hit", res, err)
			}
			if inMem := len(c.Has(d)) == 2; inMem != tc.wantMemory {
				t.Fatalf("in memory after a disk hit: %v; want %v", inMem, tc.wantMemory)
			}
		})
	}
	t.Run(ReadNoCache, func(t *testing.T) {
		cfg := testConfig(t)
		cfg.ReadPolicy = ReadNoCache
		c := mustOpen(t, cfg, src, newMemSink())
		for range 2 {
			res, err := c.Link(ctx, d, 3000, dst)
			if err != nil || res.Hit || res.FetchedBytes != 3000 {
				t.Fatalf("Link = %+v, %v; want a miss fetching 3000 bytes each time", res, err)
			}
			checkFile(t, dst, data)
		}
		if st := c.Stats(); st.DiskBlobs != 0 || st.MemoryBlobs != 0 {
			t.Fatalf("Stats = %+v; want nothing kept", st)
		}
	})
}

// TestLinkOtherFilesystem needs a second filesystem (/dev/shm, a tmpfs) beside the test's
// temporary directory.
func TestLinkOtherFilesystem(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "paddock-cache-test-")
	if err != nil {
		testutil.Skip(t, "no /dev/shm: "+err.Error(), "run on Linux with /dev/shm mounted")
	}
	defer os.RemoveAll(shm)
	cfg := testConfig(t)
	var sa, sb syscall.Stat_t
	if syscall.Stat(filepath.Dir(cfg.Dir), &sa) != nil || syscall.Stat(shm, &sb) != nil || sa.Dev == sb.Dev {
		testutil.Skip(t, "the test's temporary directory is on the same filesystem as /dev/shm", "set TMPDIR to a directory on a disk filesystem")
	}
	src := newMemSource()
	data := randBytes(70, 5000)
	d := src.add(data)
	c := mustOpen(t, cfg, src, newMemSink())
	for range 2 {
		res, err := c.Link(context.Background(), d, 5000, filepath.Join(shm, "x"))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Copied {
			t.Fatalf("Link across filesystems = %+v; want Copied", res)
		}
		checkFile(t, filepath.Join(shm, "x"), data)
	}
}

func TestLinkRefetchesRemovedFile(t *testing.T) {
	src := newMemSource()
	data := randBytes(90, 6000)
	d := src.add(data)
	cfg := testConfig(t)
	cfg.MemoryBytes = 0
	c := mustOpen(t, cfg, src, newMemSink())
	dst := filepath.Join(t.TempDir(), "x")
	if _, err := c.Link(context.Background(), d, 6000, dst); err != nil {
		t.Fatal(err)
	}
	os.Remove(c.path(d)) // someone cleans the cache directory by hand
	res, err := c.Link(context.Background(), d, 6000, filepath.Join(filepath.Dir(dst), "y"))
	if err != nil || res.Hit || res.FetchedBytes != 6000 {
		t.Fatalf("Link after the file was removed = %+v, %v; want a miss that fetched it again", res, err)
	}
	if st := c.Stats(); st.DiskBytes != 6000 || st.DiskBlobs != 1 {
		t.Fatalf("Stats = %+v; want the blob once", st)
	}
}

// TestDiskReallyFull puts host.cache_dir on a 256 KiB tmpfs (needs root to mount it) with
// a budget larger than that, and fills it: the fetch fails with ErrFull naming the
// directory, and leaves nothing behind.
func TestDiskReallyFull(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Skip(t, "mounting a small tmpfs needs root", "run the tests as root, e.g. `sudo go test ./hostd/cache/`")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt).CombinedOutput(); err != nil {
		testutil.Skip(t, "cannot mount a tmpfs: "+string(out), "run the tests as root where mount(8) works")
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	cfg := testConfig(t)
	cfg.Dir = filepath.Join(mnt, "cache")
	cfg.DiskBytes = 10 << 20
	cfg.MemoryBytes = 0
	src := newMemSource()
	c := mustOpen(t, cfg, src, newMemSink())
	small := randBytes(100, 100<<10)
	ds := src.add(small)
	if _, err := c.Link(context.Background(), ds, int64(len(small)), filepath.Join(cfg.Dir, "in-small")); err != nil {
		t.Fatal(err)
	}
	big := randBytes(101, 200<<10)
	_, err := c.Link(context.Background(), src.add(big), int64(len(big)), filepath.Join(cfg.Dir, "in-big"))
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), cfg.Dir) || !strings.Contains(err.Error(), "host.cache_disk_bytes") {
		t.Fatalf("Link into a full filesystem: %v; want ErrFull naming %s and host.cache_disk_bytes", err, cfg.Dir)
	}
	t.Log(err)
	if names := dirNames(t, filepath.Join(cfg.Dir, "tmp")); len(names) != 0 {
		t.Fatalf("tmp holds %v after ENOSPC; want nothing", names)
	}
	if st := c.Stats(); st.DiskBlobs != 1 || st.DiskBytes != int64(len(small)) {
		t.Fatalf("Stats = %+v; want only the small blob", st)
	}
	// The same through Ingest.
	out := filepath.Join(t.TempDir(), "out")
	os.WriteFile(out, big, 0o600)
	if err := c.Ingest(context.Background(), out, blob.FromBytes(big), int64(len(big))); !errors.Is(err, ErrFull) {
		t.Fatalf("Ingest into a full filesystem: %v; want ErrFull", err)
	}
	if names := dirNames(t, filepath.Join(cfg.Dir, "tmp")); len(names) != 0 {
		t.Fatalf("tmp holds %v after ENOSPC; want nothing", names)
	}
}
