package sched

import (
	"context"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// History of the server's activity for the console's charts: one sample every
// HistoryInterval, the last HistorySamples kept in memory (an hour). Counters come from
// the task changes the server makes (observedStore); queue depth from store.Counts once
// an interval. A restart starts an empty history.
const (
	HistoryInterval = 10 * time.Second
	HistorySamples  = 360
)

// history is the ring of samples and the counters of the current interval. mu guards
// the fields below.
type history struct {
	mu                        sync.Mutex
	sub, start, ok, bad, latN int64
	latSum, latMax            time.Duration
	since                     time.Time           // start of the current interval
	ring                      []*paddockv1.Sample // oldest first, at most HistorySamples
}

func newHistory(now time.Time) *history { return &history{since: now} }

func (h *history) submitted() {
	h.mu.Lock()
	h.sub++
	h.mu.Unlock()
}

// started counts a lease; a task's first lease also counts its submit-to-start latency.
func (h *history) started(t store.Task, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.start++
	if t.Attempt == 1 && !t.CreatedAt.IsZero() {
		l := max(now.Sub(t.CreatedAt), 0)
		h.latN++
		h.latSum += l
		h.latMax = max(h.latMax, l)
	}
}

func (h *history) finished(t store.Task) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.State == store.Succeeded {
		h.ok++
	} else {
		h.bad++
	}
}

// take ends the current interval at now with the given queue depths and starts the next.
func (h *history) take(now time.Time, queued, running int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sm := h.current(now, queued, running)
	h.sub, h.start, h.ok, h.bad, h.latN, h.latSum, h.latMax = 0, 0, 0, 0, 0, 0, 0
	h.since = now
	if len(h.ring) == HistorySamples {
		copy(h.ring, h.ring[1:])
		h.ring = h.ring[:HistorySamples-1]
	}
	h.ring = append(h.ring, sm)
}

// current is the sample of the interval so far. Caller holds h.mu.
func (h *history) current(now time.Time, queued, running int64) *paddockv1.Sample {
	sm := &paddockv1.Sample{AtUnixMs: now.UnixMilli(), Submitted: h.sub, Started: h.start, Succeeded: h.ok, Failed: h.bad,
		Queued: queued, Running: running, LatencyMaxMs: h.latMax.Milliseconds(), DurationMs: max(now.Sub(h.since), 0).Milliseconds()}
	if h.latN > 0 {
		sm.LatencyAvgMs = (h.latSum / time.Duration(h.latN)).Milliseconds()
	}
	return sm
}

// samples returns a copy of the ring, oldest first, and then the interval so far
// (ending at now, with the given queue depths).
func (h *history) samples(now time.Time, queued, running int64) []*paddockv1.Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append(append([]*paddockv1.Sample(nil), h.ring...), h.current(now, queued, running))
}

// historyLoop takes a sample every HistoryInterval until ctx is done.
func (s *Server) historyLoop(ctx context.Context) {
	t := time.NewTicker(HistoryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sampleHistory(ctx, now)
		}
	}
}

// sampleHistory ends the current interval at now.
func (s *Server) sampleHistory(ctx context.Context, now time.Time) {
	queued, running, err := s.depth(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("counting tasks for the history", "err", err)
		}
		return
	}
	s.hist.take(now, queued, running)
}

// depth counts the queued tasks and the leased or running ones.
func (s *Server) depth(ctx context.Context) (queued, running int64, err error) {
	counts, err := s.st.Counts(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("counting tasks: %w", err)
	}
	for _, c := range counts {
		switch c.State {
		case store.Queued:
			queued += c.N
		case store.Leased, store.Running:
			running += c.N
		}
	}
	return queued, running, nil
}

// History implements paddockv1connect.ClusterServiceHandler: the samples kept, then
// the interval so far.
func (api *clientAPI) History(ctx context.Context, _ *connect.Request[paddockv1.HistoryRequest]) (*connect.Response[paddockv1.HistoryResponse], error) {
	queued, running, err := api.s.depth(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	return connect.NewResponse(&paddockv1.HistoryResponse{IntervalMs: HistoryInterval.Milliseconds(),
		Samples: api.s.hist.samples(time.Now(), queued, running)}), nil
}
