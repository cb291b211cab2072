package sched

import (
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Locality-aware placement (issue 11). The server keeps, per host, the digests of the
// blobs its cache holds: the summary each host sends with its status and again within
// 100ms of a change (the largest blobs its cache holds or is fetching, api/host/v1
// Status.cached_blobs), plus what the server did itself (a task's inputs noted on a host
// the moment a task is placed on one of its guests, a task's outputs when it succeeded
// there). The dispatcher places a ready task with input blobs on a free slot of the host
// holding most of its input bytes. A task whose inputs no host holds goes to the host
// whose cache holds the fewest blobs (so distinct inputs spread over the hosts' caches),
// and the next tasks of the same input follow it there, in the same round too.
//
// When the chosen host has no free slot but another host has, the task lets that slot
// go for a while, as in Spark's delay scheduling: it waits while the hosts holding its
// inputs keep launching tasks (the wait counts from the later of the first slot it let
// go and the last launch on such a host) and takes the free slot once that wait reaches
// LocalityDelay, or the time the free slot's host would take to fetch the inputs if that
// is longer (those hosts are stuck, or full of long tasks). The fetch time is the
// inputs' bytes over the rate at which that host staged inputs it fetched lately: the
// time from a task's placement to the host's Staged report. A task waiting for a
// first host for its inputs waits one LocalityDelay at most. No task lets free slots go
// for more than maxLocalityWait delays in all, however busy its hosts: locality is
// weighed against waiting and never starves a task. Time a task spends queued while
// every slot is taken is not a wait for locality and does not count.

// cachedEntry is one blob a host holds as far as the server knows: noted is when the
// server saw it go there (zero: only the host's summary lists it).
type cachedEntry struct {
	noted time.Time
}

// notedGrace is how long a blob the server noted on a host (inputs placed there,
// outputs collected there) counts as cached there without the host's summary listing
// it: a summary the host made before it heard of the task may arrive after the note (a
// host lists a blob from the start of its download, within 100ms; an older host only
// once the download is done, with its next status).
const notedGrace = 5 * time.Second

// setCacheSummary replaces what the server knows of h's cache with the host's summary,
// keeping what it noted itself within notedGrace (the host may not list it yet).
// Caller holds hostRegistry.mu.
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

// homes returns the hosts a task whose inputs no host holds should go to: of the
// connected hosts with an agent that serves t, those whose caches hold the fewest blobs
// as far as the server knows (each with weight 1; none when no host's agent serves t).
// Caller holds s.agents.mu.
func (s *Server) homes(t *store.Task) map[string]int64 {
	out := map[string]int64{}
	least := -1
	var sizes map[string]int
	for _, a := range s.agents.byID {
		if a.hostID == "" || !a.serves(t) {
			continue
		}
		if sizes == nil {
			sizes = s.hosts.cacheSizes()
		}
		n, ok := sizes[a.hostID]
		if !ok {
			continue // not a connected host
		}
		switch {
		case least < 0 || n < least:
			least = n
			clear(out)
			out[a.hostID] = 1
		case n == least:
			out[a.hostID] = 1
		}
	}
	return out
}

// serves reports whether a could run t once it has a free slot.
func (a *agent) serves(t *store.Task) bool {
	return a.state == agentConnected && !a.gone && a.types[t.Type] != nil && a.unmet(t.Requirements) == ""
}

// nearest returns the agent with a free slot for t on the host of near (bytes of t's
// inputs per host) holding the most bytes, least pending first; nil when none has a
// free slot. Caller holds s.agents.mu.
func (s *Server) nearest(t *store.Task, near map[string]int64) *agent {
	var best *agent
	var bestBytes int64
	for _, a := range s.agents.byID {
		b := near[a.hostID]
		if b == 0 || b < bestBytes || !a.fits(t) {
			continue
		}
		if b > bestBytes || best == nil || a.pending() < best.pending() {
			best, bestBytes = a, b
		}
	}
	return best
}

// pickNear picks an agent for t, preferring the hosts that hold its inputs (see above):
// nil when no agent fits, or when t should wait a little longer for a slot near them.
// Caller holds s.agents.mu.
func (s *Server) pickNear(t *store.Task, now time.Time) *agent {
	if s.cfg.LocalityDelay < 0 || len(t.InputBlobs) == 0 {
		return s.pick(t)
	}
	near, where := s.hosts.localBytes(t), "local"
	if len(near) == 0 {
		near, where = s.homes(t), "new"
	}
	if len(near) == 0 {
		return s.pick(t) // no host's agent serves t: an agent on the agent port, if any
	}
	if a := s.nearest(t, near); a != nil {
		s.metrics.placements.WithLabelValues(where).Inc()
		return s.placed(a, t, now)
	}
	a := s.pick(t)
	if a == nil {
		return nil // no free slot anywhere: t lets none go by waiting
	}
	if s.agents.passedOver == nil {
		s.agents.passedOver = map[string]time.Time{}
	}
	first, ok := s.agents.passedOver[t.ID]
	if !ok {
		first = now
		s.agents.passedOver[t.ID] = now
	}
	waitFrom, wait := first, s.cfg.LocalityDelay
	if where == "local" {
		waitFrom = s.hosts.lastLaunchSince(near, waitFrom)
		// Going elsewhere costs fetching the inputs there: a local slot that comes
		// free within about that long is worth the wait.
		wait = max(wait, s.hosts.fetchTime(a.hostID, t))
	}
	if now.Sub(waitFrom) < wait && now.Sub(first) < maxLocalityWait*s.cfg.LocalityDelay {
		s.agents.localWait[t.Type] = true
		return nil // wait for a slot near the inputs
	}
	if where == "local" {
		where = "remote"
	}
	s.metrics.placements.WithLabelValues(where).Inc()
	return s.placed(a, t, now)
}

// maxLocalityWait bounds, in LocalityDelays, how long a task lets free slots go while it
// waits for a slot near its inputs, even while the hosts holding them keep launching
// other tasks: it never starves.
const maxLocalityWait = 20

// placed records that a takes t now and returns a: the launch on a's host, and t's
// inputs noted there at once (the host fetches them now), so the next tasks of those
// inputs follow t there, in this dispatch round too. Caller holds s.agents.mu.
func (s *Server) placed(a *agent, t *store.Task, now time.Time) *agent {
	delete(s.agents.passedOver, t.ID)
	if len(s.agents.passedOver) > passedOverPrune {
		for id, at := range s.agents.passedOver { // tasks cancelled while they waited
			if now.Sub(at) > 10*maxLocalityWait*s.cfg.LocalityDelay {
				delete(s.agents.passedOver, id)
			}
		}
	}
	if a.hostID == "" {
		return a
	}
	// The host's Staged measures its fetch rate (fetchMeasured).
	s.hosts.launched(a.hostID, t, now, s.dataPath(a) == agentv1.DataPath_DATA_PATH_SHARED)
	return a
}

// minRateSample is the least a host must have fetched to stage a task's inputs for the
// time that took to count towards its fetch rate (smaller fetches measure latency).
const minRateSample = 1 << 20

// passedOverPrune is the size of Server.passedOver (and hostRegistry.placedAt) past
// which placed (launched) drops the entries of tasks gone while they waited (whose host
// never answered).
const passedOverPrune = 4096

// localityScan is how many ready tasks of a type the dispatcher reads in a round after
// one of them waited for a slot near its inputs: a free slot elsewhere may suit a task
// further back in the queue (delay scheduling looks past the head of the queue).
const localityScan = 256

// outputsAt notes a succeeded task's output blobs on the host of the guest that ran it
// (the host collected them into its cache), so the next stage of a pipeline is placed
// there.
func (s *Server) outputsAt(t store.Task) {
	if t.State != store.Succeeded || len(t.OutputBlobs) == 0 {
		return
	}
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	if a := s.agents.byID[t.AgentID]; a != nil && a.hostID != "" && s.dataPath(a) == agentv1.DataPath_DATA_PATH_SHARED {
		s.hosts.noteCached(a.hostID, t.OutputBlobs, time.Now())
	}
}
