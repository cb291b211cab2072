package sched

import (
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Locality-aware placement (issue 11). The server keeps, per host, the digests of the
// blobs its cache holds: the summary each host sends with its status (the largest
// blobs it caches, api/host/v1 Status.cached_blobs), plus what the server saw since
// (a task's inputs staged there when it was leased to one of the host's guests, a
// task's outputs collected there when it succeeded). The dispatcher places a ready
// task with input blobs on a free slot of the host holding most of its input bytes.
// When no such slot is free it leaves the task for later while those hosts keep
// launching tasks: as in Spark's delay scheduling, the wait counts from the later of
// the task becoming ready and the last launch on a host holding its inputs, and the
// task takes any free slot once that wait reaches LocalityDelay (the hosts holding its
// inputs are stuck or full of long tasks), or after maxLocalityWait delays in all (so
// locality is weighed against waiting and never starves a task). A task whose inputs no host holds
// takes a free slot at once, on the host whose cache holds the fewest blobs (so the
// distinct inputs spread over the hosts' caches).

// cachedEntry is one blob a host holds as far as the server knows: noted is when the
// server saw it go there (zero: only the host's summary lists it).
type cachedEntry struct {
	noted time.Time
}

// noteCached records that host holds the blobs refs (at now). Caller holds s.mu.
func (s *Server) noteCached(hostID string, refs map[string]store.BlobRef, now time.Time) {
	h := s.hosts[hostID]
	if h == nil || len(refs) == 0 {
		return
	}
	if h.cached == nil {
		h.cached = map[string]cachedEntry{}
	}
	for _, r := range refs {
		h.cached[r.Digest] = cachedEntry{noted: now}
	}
}

// notedGrace is how long a blob the server noted on a host (inputs staged there,
// outputs collected there) counts as cached there without the host's summary listing
// it: a download of a large input can outlast several status intervals.
const notedGrace = 5 * time.Second

// setCacheSummary replaces what the server knows of h's cache with the host's summary,
// keeping what it noted itself within notedGrace (the host may not list it yet).
// Caller holds s.mu.
func (h *hostRec) setCacheSummary(digests []string, now time.Time) {
	next := make(map[string]cachedEntry, len(digests))
	for d, e := range h.cached {
		if !e.noted.IsZero() && now.Sub(e.noted) < notedGrace {
			next[d] = e
		}
	}
	for _, d := range digests {
		if _, ok := next[d]; !ok {
			next[d] = cachedEntry{} // listed by the host: kept while it lists it
		}
	}
	h.cached, h.summaryAt = next, now
}

// localBytes returns, per connected host, the bytes of t's input blobs its cache holds
// (only hosts holding some). Caller holds s.mu.
func (s *Server) localBytes(t *store.Task) map[string]int64 {
	var out map[string]int64
	for id, h := range s.hosts {
		if h.state != hostConnected || len(h.cached) == 0 {
			continue
		}
		for _, r := range t.InputBlobs {
			if _, ok := h.cached[r.Digest]; ok {
				if out == nil {
					out = map[string]int64{}
				}
				out[id] += max(r.Size, 1)
			}
		}
	}
	return out
}

// pickNear picks an agent for t, preferring the hosts that hold its inputs (see above):
// nil when no agent fits, or when t should wait a little longer for a local slot.
// Caller holds s.mu.
func (s *Server) pickNear(t *store.Task, now time.Time) *agent {
	if s.cfg.LocalityDelay < 0 || len(t.InputBlobs) == 0 {
		return s.pick(t)
	}
	local := s.localBytes(t)
	if len(local) == 0 {
		return s.launched(s.pickSpread(t), now)
	}
	var best *agent
	var bestBytes int64
	for _, a := range s.agents {
		b := local[a.hostID]
		if b == 0 || b < bestBytes || !a.fits(t) {
			continue
		}
		if b > bestBytes || best == nil || a.pending() < best.pending() {
			best, bestBytes = a, b
		}
	}
	if best != nil {
		s.metrics.placements.WithLabelValues("local").Inc()
		return s.launched(best, now)
	}
	since := readySince(t)
	waitFrom := since
	for id := range local {
		if h := s.hosts[id]; h != nil && h.lastLaunch.After(waitFrom) {
			waitFrom = h.lastLaunch
		}
	}
	if now.Sub(waitFrom) < s.cfg.LocalityDelay && now.Sub(since) < maxLocalityWait*s.cfg.LocalityDelay {
		s.localWait[t.Type] = true
		return nil // wait for a slot near the inputs: those hosts are launching tasks
	}
	a := s.pick(t)
	if a != nil {
		s.metrics.placements.WithLabelValues("remote").Inc()
	}
	return s.launched(a, now)
}

// maxLocalityWait bounds a task's wait for a slot near its inputs, in LocalityDelays,
// even while the hosts holding them keep launching other tasks: it never starves.
const maxLocalityWait = 20

// launched records that a (nil: none) takes a task now, and returns it. Caller holds s.mu.
func (s *Server) launched(a *agent, now time.Time) *agent {
	if a != nil && a.hostID != "" {
		if h := s.hosts[a.hostID]; h != nil {
			h.lastLaunch = now
		}
	}
	return a
}

// pickSpread picks an agent for a task whose inputs no host holds: on the host whose
// cache holds the fewest blobs (as far as the server knows), so that distinct inputs
// spread over the hosts' caches instead of every host fetching every input; least
// pending first on that host. Caller holds s.mu.
func (s *Server) pickSpread(t *store.Task) *agent {
	var best *agent
	bestN := 0
	for _, a := range s.agents {
		if a.hostID == "" || !a.fits(t) {
			continue
		}
		n := 0
		if h := s.hosts[a.hostID]; h != nil {
			n = len(h.cached)
		}
		if best == nil || n < bestN || (n == bestN && a.pending() < best.pending()) {
			best, bestN = a, n
		}
	}
	if best == nil {
		return s.pick(t) // no host's agent fits: an agent on the agent port, if any
	}
	return best
}

// localityScan is how many ready tasks of a type the dispatcher reads in a round after
// one of them waited for a slot near its inputs: a free slot elsewhere may suit a task
// further back in the queue (delay scheduling looks past the head of the queue).
const localityScan = 256

// readySince is when t became ready to dispatch: submitted, queued (a pipeline's task
// whose upstreams succeeded; a requeue), or its retry backoff ended.
func readySince(t *store.Task) time.Time {
	at := t.CreatedAt
	if t.UpdatedAt.After(at) {
		at = t.UpdatedAt
	}
	if t.NotBefore.After(at) {
		at = t.NotBefore
	}
	return at
}

// outputsAt notes a succeeded task's output blobs on the host of the guest that ran it
// (the host collected them into its cache), so the next stage of a pipeline is placed
// there.
func (s *Server) outputsAt(t store.Task) {
	if t.State != store.Succeeded || len(t.OutputBlobs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.agents[t.AgentID]; a != nil && a.hostID != "" && s.dataPath(a) == agentv1.DataPath_DATA_PATH_SHARED {
		s.noteCached(a.hostID, t.OutputBlobs, time.Now())
	}
}
