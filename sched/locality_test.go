package sched_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/blob"
)

// localityRun is one run of the locality experiment.
type localityRun struct {
	delay         time.Duration // the server's LocalityDelay (negative: off)
	inputs, tasks int
	size          int64 // bytes of each input
	cacheBlobs    int   // each host cache's disk tier, in inputs
	guests, slots int   // per host, per guest
	fs            *blob.FS
	digests       []blob.Digest
	order         []int // input of each task, in submission order
}

type localityResult struct {
	fetched      int64 // bytes the two host caches read from the server
	hits, misses int64
	elapsed      time.Duration
	detail       string // per host, and the placements by where
}

// newLocalityRun puts the inputs (random bytes) into a blob store and draws the tasks'
// inputs: every input tasks/inputs times, shuffled (seeded: both runs see one order).
func newLocalityRun(tb testing.TB, inputs, tasks int, size int64) *localityRun {
	r := &localityRun{inputs: inputs, tasks: tasks, size: size, fs: openFS(tb)}
	rng := rand.New(rand.NewPCG(11, 11))
	for i := 0; i < inputs; i++ {
		b := make([]byte, size)
		for k := 0; k+8 <= len(b); k += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				b[k+j] = byte(v >> (8 * j))
			}
		}
		d := blob.FromBytes(b)
		if _, err := r.fs.Put(context.Background(), d, size, bytes.NewReader(b)); err != nil {
			tb.Fatal(err)
		}
		r.digests = append(r.digests, d)
	}
	for i := 0; i < tasks; i++ {
		r.order = append(r.order, i%inputs)
	}
	rng.Shuffle(len(r.order), func(i, j int) { r.order[i], r.order[j] = r.order[j], r.order[i] })
	return r
}

// run starts a server with LocalityDelay delay and two cache hosts, submits the tasks
// in one batch, waits for all, and returns what the hosts fetched from the server.
func (r *localityRun) run(tb testing.TB, delay time.Duration) localityResult {
	tb.Helper()
	cfg := rawAgentConfig()
	cfg.Blobs, cfg.LocalityDelay = r.fs, delay
	cfg.HeartbeatInterval, cfg.AgentTimeout = 300*time.Millisecond, 10*time.Second // a loaded machine must not lose agents mid-run
	cs := startClusterServer(tb, cfg)
	var hosts []*cacheHost
	for _, id := range []string{"h1", "h2"} {
		h := startCacheHost(tb, cs, id, int64(r.cacheBlobs)*r.size)
		h.guests(tb, r.guests, dataHandlers(r.slots))
		hosts = append(hosts, h)
	}
	waitAgents(tb, cs.testServer, 2*r.guests)
	specs := make([]*paddockv1.TaskSpec, len(r.order))
	for i, in := range r.order {
		specs[i] = &paddockv1.TaskSpec{Type: "touch", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(r.digests[in])}}}
	}
	ctx := context.Background()
	start := time.Now()
	retried := 0
	resp, err := cs.tasks.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: specs}))
	if err != nil {
		tb.Fatal(err)
	}
	for _, res := range resp.Msg.GetResults() {
		got := wait(tb, cs.testServer, res.GetTask().GetId(), 5*time.Minute)
		if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
			tb.Fatalf("task = %v; want succeeded", got)
		}
		retried += int(got.GetAttempt()) - 1
	}
	out := localityResult{elapsed: time.Since(start)}
	for _, h := range hosts {
		out.fetched += h.fetched.Load()
		out.hits += h.hits.Load()
		out.misses += h.misses.Load()
	}
	var detail []string
	for _, h := range hosts {
		n := 0
		for _, k := range h.seen {
			n += k
		}
		detail = append(detail, fmt.Sprintf("%s: %d stagings of %d distinct inputs", h.id, n, len(h.seen)))
	}
	if resp, err := httpClient.Get(cs.url + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "paddock_locality_placements_total") {
				detail = append(detail, strings.TrimPrefix(l, "paddock_locality_placements_total"))
			}
		}
	}
	detail = append(detail, fmt.Sprintf("%d retries", retried))
	out.detail = strings.Join(detail, "; ")
	cs.stop()
	return out
}

func (r localityResult) String() string {
	return fmt.Sprintf("fetched %.1f MiB from the server (%d cache misses, %d hits) in %v [%s]", float64(r.fetched)/(1<<20), r.misses, r.hits, r.elapsed.Round(time.Millisecond), r.detail)
}

// TestLocalityPlacement runs 60 tasks over 6 inputs on two hosts with real host caches
// (each holding 4 of the 6), with locality-aware placement off and on: on, every input
// is fetched by about one host, so the hosts fetch fewer bytes from the server than off.
func TestLocalityPlacement(t *testing.T) {
	r := newLocalityRun(t, 6, 60, 256<<10)
	r.cacheBlobs, r.guests, r.slots = 4, 2, 2
	off := r.run(t, -1)
	on := r.run(t, 500*time.Millisecond)
	t.Logf("locality off: %v", off)
	t.Logf("locality on:  %v (%.2f× the bytes of off)", on, float64(on.fetched)/float64(off.fetched))
	if on.fetched >= off.fetched {
		t.Fatalf("locality on fetched %d bytes, off %d: want fewer with locality", on.fetched, off.fetched)
	}
	if min := int64(r.inputs) * r.size; on.fetched < min {
		t.Fatalf("locality on fetched %d bytes, less than the %d of the inputs: the count is wrong", on.fetched, min)
	}
}

// BenchmarkLocality is the experiment: 200 tasks over 20 distinct 32 MiB inputs on
// two hosts (real host caches of 12 inputs each over the cluster port, in-process
// agents with the shared data path), bytes fetched from the server with locality off
// and on (the default delay of 500ms, and 3s), in the same run. Goal: on ≤ 0.3× off.
//
//	go test -run '^$' -bench Locality -benchtime 1x ./sched/
func BenchmarkLocality(b *testing.B) {
	r := newLocalityRun(b, 20, 200, 32<<20)
	r.cacheBlobs, r.guests, r.slots = 12, 2, 2
	for i := 0; i < b.N; i++ {
		off := r.run(b, -1)
		b.Logf("locality off: %v", off)
		for _, d := range []time.Duration{500 * time.Millisecond, time.Second, 3 * time.Second} {
			on := r.run(b, d)
			ratio := float64(on.fetched) / float64(off.fetched)
			b.Logf("locality on, delay %v: %v; on/off bytes fetched %.3f (goal ≤ 0.3)", d, on, ratio)
			b.ReportMetric(ratio, fmt.Sprintf("on/off@%v", d))
		}
		b.ReportMetric(float64(off.fetched)/(1<<20), "MiB-off")
	}
}
