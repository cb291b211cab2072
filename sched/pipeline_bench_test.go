package sched_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/blob"
)

// handoffEnv is a server with two cache hosts of one guest each, serving compress and
// checksum (dataHandlers), and an input blob.
type handoffEnv struct {
	cs    *clusterServer
	fs    *blob.FS
	hosts []*cacheHost
	input blob.Digest
}

func newHandoffEnv(tb testing.TB, size int, delay time.Duration) *handoffEnv {
	tb.Helper()
	fs := openFS(tb)
	var sb strings.Builder
	for i := 0; sb.Len() < size; i++ {
		fmt.Fprintf(&sb, "record %09d: the quick brown fox %x jumps over the lazy dog\n", i, i*7919)
	}
	data := sb.String()[:size]
	in := putBlob(tb, fs, data)
	cfg := rawAgentConfig()
	cfg.Blobs, cfg.LocalityDelay = fs, delay
	cfg.HeartbeatInterval, cfg.AgentTimeout = 300*time.Millisecond, 10*time.Second
	e := &handoffEnv{cs: startClusterServer(tb, cfg), fs: fs, input: in}
	for _, id := range []string{"h1", "h2"} {
		h := startCacheHost(tb, e.cs, id, 4<<30)
		h.guests(tb, 1, dataHandlers(1))
		e.hosts = append(e.hosts, h)
	}
	waitAgents(tb, e.cs.testServer, 2)
	return e
}

// handoff is one pipeline run: the tasks as they ended.
type handoff struct {
	up, down *paddockv1.Task
}

func (e *handoffEnv) run(tb testing.TB) handoff {
	tb.Helper()
	r, err := e.cs.tasks.SubmitPipeline(context.Background(), connect.NewRequest(&paddockv1.SubmitPipelineRequest{Stages: []*paddockv1.Stage{
		{Name: "compress", Task: &paddockv1.TaskSpec{Type: "compress", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(e.input)}}}},
		{Name: "checksum", Task: &paddockv1.TaskSpec{Type: "checksum", InputTasks: map[string]string{"in": "@stage:compress/out"}}},
	}}))
	if err != nil {
		tb.Fatal(err)
	}
	st := r.Msg.GetStages()
	down := wait(tb, e.cs.testServer, st[1].GetTask().GetId(), 5*time.Minute)
	up := wait(tb, e.cs.testServer, st[0].GetTask().GetId(), time.Second)
	if up.GetState() != paddockv1.State_STATE_SUCCEEDED || down.GetState() != paddockv1.State_STATE_SUCCEEDED {
		tb.Fatalf("pipeline ended %v / %v; want both succeeded", up, down)
	}
	return handoff{up, down}
}

// hostOf is the host of the agent that ran t (agent ids are <host>-g<letter>).
func hostOf(t *paddockv1.Task) string {
	h, _, _ := strings.Cut(t.GetAgentId(), "-")
	return h
}

func (e *handoffEnv) hit(id string) bool {
	for _, h := range e.hosts {
		if h.hit(id) {
			return true
		}
	}
	return false
}

// TestPipelineSameHost: compress → checksum on two hosts: the checksum runs on the host
// that ran compress and is staged from that host's cache (the compressed output was
// collected into it), without fetching from the server.
func TestPipelineSameHost(t *testing.T) {
	e := newHandoffEnv(t, 4<<20, 5*time.Second)
	for i := 0; i < 3; i++ {
		h := e.run(t)
		if hostOf(h.up) != hostOf(h.down) {
			t.Fatalf("run %d: compress ran on %s, checksum on %s; want the same host", i, h.up.GetAgentId(), h.down.GetAgentId())
		}
		if !e.hit(h.down.GetId()) {
			t.Fatalf("run %d: the checksum's input was not a cache hit on host %s", i, hostOf(h.down))
		}
	}
}

// BenchmarkPipelineHandoff is the pipeline figure: compress → checksum over a
// 256 MiB input, 20 runs on two hosts with real host caches: the time from the upstream's
// success being recorded to the downstream's lease (p50, p90), whether the downstream ran
// on the same host and read its input from the cache; and, in the same run, the baseline:
// submit → lease of an independent task (a checksum of a small cached blob). Goal: p50
// handoff ≤ 100 ms.
//
//	go test -run '^$' -bench PipelineHandoff -benchtime 1x ./sched/
func BenchmarkPipelineHandoff(b *testing.B) {
	e := newHandoffEnv(b, 256<<20, 500*time.Millisecond)
	small := putBlob(b, e.fs, "a small input")
	for i := 0; i < b.N; i++ {
		var hand, base []time.Duration
		same, hits := 0, 0
		for k := 0; k < 20; k++ {
			h := e.run(b)
			hand = append(hand, time.Duration(h.down.GetAttempts()[0].GetLeasedAtUnixMs()-h.up.GetFinishedAtUnixMs())*time.Millisecond)
			if hostOf(h.up) == hostOf(h.down) {
				same++
			}
			if e.hit(h.down.GetId()) {
				hits++
			}
			tk := submit(b, e.cs.testServer, &paddockv1.TaskSpec{Type: "checksum", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(small)}}})
			got := wait(b, e.cs.testServer, tk.GetId(), time.Minute)
			base = append(base, time.Duration(got.GetAttempts()[0].GetLeasedAtUnixMs()-got.GetCreatedAtUnixMs())*time.Millisecond)
		}
		p := func(ds []time.Duration, q float64) time.Duration {
			s := append([]time.Duration(nil), ds...)
			sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
			return s[int(q*float64(len(s)-1))]
		}
		b.Logf("upstream success -> downstream lease: p50 %v, p90 %v, max %v (20 runs; goal p50 <= 100ms)", p(hand, .5), p(hand, .9), p(hand, 1))
		b.Logf("baseline submit -> lease of an independent task: p50 %v, p90 %v", p(base, .5), p(base, .9))
		b.Logf("downstream on the upstream's host: %d/20; its input a host-cache hit: %d/20", same, hits)
		b.ReportMetric(float64(p(hand, .5).Milliseconds()), "handoff-p50-ms")
		b.ReportMetric(float64(p(base, .5).Milliseconds()), "baseline-p50-ms")
		b.ReportMetric(float64(hits), "hits/20")
	}
}
