package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/shareguest"
)

// BenchmarkDataPlane measures, for inputs of 1 MiB, 64 MiB and 1 GiB, the bytes/s from a
// task's submission to its handler having read the whole input, in a TCG guest of
// `paddock dev`, beside the raw channel measured in the same run: the same file read
// by a plain busybox guest through the same virtio-9p channel with no Paddock in
// between (shareguest.MeasureRead, dd bs=1M). The handler only reads (checksum with no
// algorithms: it counts the bytes), so both sides do the same work.
//
// Per size it reports:
//   - raw_MB/s: the raw channel;
//   - miss_MB/s: Submit (the blob already uploaded) → handler done, the host fetching
//     the blob from the server into its cache first; miss/raw is the ratio;
//   - hit_MB/s: the same input again on the same host (a cache hit: nothing fetched);
//   - upload_MB/s: `paddock task submit --input FILE` end to end, the CLI's hashing and
//     upload included;
//   - start_miss_ms, start_hit_ms, start_ratio: submit → handler start (the task's
//     attempt end minus the handler's wall time), first run vs cache hit.
//
// Run: go test -run XXX -bench DataPlane -benchtime 1x -timeout 90m -v ./internal/e2e
func BenchmarkDataPlane(b *testing.B) {
	bin := binaries(b)
	g := newGuestEnv(b)
	dir := dataDir(b)
	metrics := freeAddr(b)
	p := startDev(b, g, bin, dir, "--guests", "1", "--max-guests", "1", "--metrics-listen", metrics)
	share := shareguest.ShareDir(b, false)
	for i, size := range []int64{1 << 20, 64 << 20, 1 << 30} {
		name := fmt.Sprintf("in-%d.bin", size)
		path := filepath.Join(share, name)
		writeRandom(b, path, size, uint64(10+i))
		b.Run(sizeName(size), func(b *testing.B) {
			raw := shareguest.MeasureRead(b, share, name)
			var miss, hit, upload, startMiss, startHit time.Duration
			for n := 0; n < b.N; n++ {
				// A fresh blob per round: the first run of each round is a miss.
				fresh := filepath.Join(b.TempDir(), name)
				writeRandom(b, fresh, size, uint64(1000+n*10+i))
				t0 := time.Now()
				up := p.submit(b, bin, "--type", "checksum", "--payload", `{"algorithms":[]}`, "--inline-max", "0", "--input", "data="+fresh)
				upload += taskEnd(b, up).Sub(t0)
				digest := strings.Fields(string(p.run(b, bin, "blob", "put", "-q", path)))[0]
				m := p.submit(b, bin, "--type", "checksum", "--payload", `{"algorithms":[]}`, "--input-blob", "data="+digest)
				h := p.submit(b, bin, "--type", "checksum", "--payload", `{"algorithms":[]}`, "--input-blob", "data="+digest)
				miss += taskEnd(b, m).Sub(taskCreated(b, m))
				hit += taskEnd(b, h).Sub(taskCreated(b, h))
				startMiss += startLatency(b, m)
				startHit += startLatency(b, h)
				if n < b.N-1 { // the next round's miss needs the blob gone from the host cache: a new blob instead
					path = filepath.Join(share, fmt.Sprintf("in-%d-%d.bin", size, n+1))
					writeRandom(b, path, size, uint64(2000+n*10+i))
				}
			}
			mb := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
			b.ReportMetric(raw.MBPerSec(), "raw_MB/s")
			b.ReportMetric(mb(miss), "miss_MB/s")
			b.ReportMetric(mb(hit), "hit_MB/s")
			b.ReportMetric(mb(upload), "upload_MB/s")
			b.ReportMetric(mb(miss)/raw.MBPerSec(), "miss/raw")
			b.ReportMetric(mb(hit)/raw.MBPerSec(), "hit/raw")
			b.ReportMetric(float64(startMiss.Milliseconds())/float64(b.N), "start_miss_ms")
			b.ReportMetric(float64(startHit.Milliseconds())/float64(b.N), "start_hit_ms")
			b.ReportMetric(float64(startMiss)/float64(max(startHit, time.Millisecond)), "start_ratio")
		})
	}
}

func sizeName(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

func taskCreated(t testing.TB, tk taskJSON) time.Time {
	t.Helper()
	ms, err := strconv.ParseInt(tk.CreatedAtUnixMs, 10, 64)
	if err != nil {
		t.Fatalf("task %s: created_at %q: %v", tk.ID, tk.CreatedAtUnixMs, err)
	}
	return time.UnixMilli(ms)
}

// taskEnd is when the task's last attempt ended (its handler had read the input).
func taskEnd(t testing.TB, tk taskJSON) time.Time {
	t.Helper()
	if len(tk.Attempts) == 0 {
		t.Fatalf("task %s has no attempts", tk.ID)
	}
	ms, err := strconv.ParseInt(tk.Attempts[len(tk.Attempts)-1].FinishedAtUnixMs, 10, 64)
	if err != nil {
		t.Fatalf("task %s: finished_at: %v", tk.ID, err)
	}
	return time.UnixMilli(ms)
}
