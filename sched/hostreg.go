package sched

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// hostRegistry is the server's view of the host daemons: their records (pools, guests,
// load, the blobs their caches hold as far as the server knows), the backlog last sent
// to them, the Collects waiting for a host's answer and when tasks whose host stages
// their inputs were placed (locality.go measures the hosts' fetch rates from it).
//
// mu guards the fields below and every field of every hostRec in hosts. Code outside
// this file reaches them only through the registry's methods, each of which takes mu
// for its own duration. Lock order (doc.go): the agent registry's lock may be held
// while calling these methods (a task event for a guest's host is queued under the
// agent registry's lock, so that it keeps its place in the host's stream relative to
// the TaskSnapshot); the reverse never happens: no method here calls into the agent
// registry, the store, or blocks on a send (hostLink.send never blocks).
type hostRegistry struct {
	mu         sync.Mutex
	hosts      map[string]*hostRec
	backlog    map[string]int64          // queued tasks by type, as last sent to hosts
	collecting map[uint64]pendingCollect // Collects sent to hosts, by request id
	// placedAt: when tasks whose host stages their inputs were placed, until the host's
	// Staged (fetchMeasured).
	placedAt map[string]time.Time
}

// errHostReplaced cancels a host's control stream when the host opens another.
var errHostReplaced = errors.New("replaced by a new control stream of the same host")

func newHostRegistry() *hostRegistry {
	return &hostRegistry{hosts: map[string]*hostRec{}, collecting: map[uint64]pendingCollect{}}
}

// register records host id's registration on a new control stream, link: a previous
// stream of the host is cancelled. It returns the host's record.
func (r *hostRegistry) register(id string, reg *hostv1.Register, link *hostLink, now time.Time) *hostRec {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[id]
	if h == nil {
		h = &hostRec{id: id}
		r.hosts[id] = h
	}
	if h.link != nil {
		h.link.cancel(errHostReplaced)
	}
	h.version, h.accel, h.state, h.link = reg.GetVersion(), reg.GetAccel(), hostConnected, link
	h.cpus, h.memory = reg.GetCapacity().GetCpus(), reg.GetCapacity().GetMemoryBytes()
	h.connectedAt, h.lastSeen = now, now
	h.setPools(reg.GetPools())
	h.statsEvery = 5 * time.Second
	if ms := reg.GetStatsIntervalMs(); ms > 0 {
		h.statsEvery = time.Duration(ms) * time.Millisecond
	}
	h.caps = map[string]bool{}
	for _, c := range reg.GetCapabilities() {
		h.caps[c] = true
	}
	return h
}

// disconnect marks h lost at now if link is still its control stream, and reports
// whether it was.
func (r *hostRegistry) disconnect(h *hostRec, link *hostLink, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h.link != link {
		return false
	}
	h.link, h.state, h.lostAt = nil, hostLost, now
	return true
}

// status records a host's Status received at now.
func (r *hostRegistry) status(h *hostRec, st *hostv1.Status, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h.lastSeen = now
	if st.GetLoad() != nil {
		h.load = st.GetLoad()
	}
	h.setPools(st.GetPools())
	h.guests = st.GetGuests()
	h.trackProgress(now)
	h.setCacheSummary(st.GetCachedBlobs(), now)
}

// guestProgress is a guest's CPU time as its host last reported it, and when the
// reports last showed it rising (zero: not since the server first saw the guest).
type guestProgress struct {
	cpuMS      int64
	samples    int // statuses that listed it
	advancedAt time.Time
	stopping   bool
}

// trackProgress updates h.progress from h.guests, received at now. A guest seen for
// the first time has not risen yet: a host that just (re)connected vouches for its
// guests only once a second statistics sample shows them running.
func (h *hostRec) trackProgress(now time.Time) {
	if h.progress == nil {
		h.progress = make(map[string]guestProgress, len(h.guests))
	}
	seen := make(map[string]bool, len(h.guests))
	for _, g := range h.guests {
		p, ok := h.progress[g.GetName()]
		if ok && g.GetCpuTimeMs() > p.cpuMS {
			p.advancedAt = now
		}
		p.cpuMS, p.stopping = max(p.cpuMS, g.GetCpuTimeMs()), g.GetState() == "stopping"
		p.samples++
		h.progress[g.GetName()] = p
		seen[g.GetName()] = true
	}
	for name := range h.progress {
		if !seen[name] {
			delete(h.progress, name)
		}
	}
}

// vouched reports whether host vouches, at now, for its guest: the host's control
// stream is up, and within the last three of its statistics intervals (and at least
// floor) it sent a Status, and its guests listed the guest, not stopping, with a CPU
// time that rose.
func (r *hostRegistry) vouched(host, guest string, now time.Time, floor time.Duration) bool {
	ok, _ := r.vouch(host, guest, now, floor)
	return ok
}

// vouch is vouched, and when the host does not vouch, why not (for the log).
func (r *hostRegistry) vouch(host, guest string, now time.Time, floor time.Duration) (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[host]
	if h == nil || h.link == nil {
		return false, "its host has no control stream"
	}
	fresh := max(floor, 3*h.statsEvery)
	p, ok := h.progress[guest]
	switch {
	case now.Sub(h.lastSeen) > fresh:
		return false, fmt.Sprintf("its host's last status is %v old (more than %v)", now.Sub(h.lastSeen).Round(time.Millisecond), fresh)
	case !ok:
		return false, "its host's last status does not list the guest"
	case p.stopping:
		return false, "its host is stopping the guest"
	case p.advancedAt.IsZero():
		return false, fmt.Sprintf("its host's statuses have not shown the guest's CPU time rising (%d ms in %d statuses)", p.cpuMS, p.samples)
	case now.Sub(p.advancedAt) > fresh:
		return false, fmt.Sprintf("the guest's CPU time last rose %v ago (more than %v) in its host's statuses", now.Sub(p.advancedAt).Round(time.Millisecond), fresh)
	}
	return true, ""
}

// linked reports whether host id has a control stream.
func (r *hostRegistry) linked(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[id]
	return h != nil && h.link != nil
}

// anyLinked reports whether any host has a control stream.
func (r *hostRegistry) anyLinked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.hosts {
		if h.link != nil {
			return true
		}
	}
	return false
}

// link returns host's control stream (nil: none).
func (r *hostRegistry) link(host string) *hostLink {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hosts[host]; h != nil {
		return h.link
	}
	return nil
}

// setBacklog records the queued counts by type last counted for the hosts.
func (r *hostRegistry) setBacklog(queued map[string]int64) {
	r.mu.Lock()
	r.backlog = queued
	r.mu.Unlock()
}

// sendBacklog queues on every connected host's link the part of queued its pools serve.
func (r *hostRegistry) sendBacklog(queued map[string]int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.hosts {
		if h.link != nil {
			h.link.send(&hostv1.ServerMessage{Msg: &hostv1.ServerMessage_Backlog{Backlog: h.backlogOf(queued)}})
		}
	}
}

// lastBacklog returns h's part of the backlog last counted (nil: none counted yet).
func (r *hostRegistry) lastBacklog(h *hostRec) *hostv1.Backlog {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.backlog == nil {
		return nil
	}
	return h.backlogOf(r.backlog)
}

// send queues m on host's control stream, if it has one.
func (r *hostRegistry) send(host string, m *hostv1.ServerMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hosts[host]; h != nil && h.link != nil {
		h.link.send(m)
	}
}

// sendOn queues m on link if link is still h's control stream, and reports whether it
// was.
func (r *hostRegistry) sendOn(h *hostRec, link *hostLink, m *hostv1.ServerMessage) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h.link != link {
		return false
	}
	link.send(m)
	return true
}

// maxTasks returns max_tasks_per_vm of host's pool (0: none).
func (r *hostRegistry) maxTasks(host, pool string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hosts[host]; h != nil {
		if p := h.pools[pool]; p != nil {
			return int(p.GetMaxTasksPerVm())
		}
	}
	return 0
}

// stages reports whether host registered the "stage" capability (CapStage).
func (r *hostRegistry) stages(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[host]
	return h != nil && h.caps[CapStage]
}

// addCollect records a Collect sent to a host; dropCollect forgets it; collectFor
// returns the Collect waiting for request id.
func (r *hostRegistry) addCollect(id uint64, p pendingCollect) {
	r.mu.Lock()
	r.collecting[id] = p
	r.mu.Unlock()
}

func (r *hostRegistry) dropCollect(id uint64) {
	r.mu.Lock()
	delete(r.collecting, id)
	r.mu.Unlock()
}

func (r *hostRegistry) collectFor(id uint64) (pendingCollect, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.collecting[id]
	return p, ok
}

// noteCached records that host holds the blobs refs (at now).
func (r *hostRegistry) noteCached(host string, refs map[string]store.BlobRef, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noteCachedLocked(host, refs, now)
}

func (r *hostRegistry) noteCachedLocked(host string, refs map[string]store.BlobRef, now time.Time) {
	h := r.hosts[host]
	if h == nil || len(refs) == 0 {
		return
	}
	if h.cached == nil {
		h.cached = map[string]cachedEntry{}
	}
	for _, ref := range refs {
		h.cached[ref.Digest] = cachedEntry{noted: now}
	}
}

// localBytes returns, per connected host, the bytes of t's input blobs its cache holds
// (only hosts holding some).
func (r *hostRegistry) localBytes(t *store.Task) map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[string]int64
	for id, h := range r.hosts {
		if h.state != hostConnected || len(h.cached) == 0 {
			continue
		}
		for _, ref := range t.InputBlobs {
			if _, ok := h.cached[ref.Digest]; ok {
				if out == nil {
					out = map[string]int64{}
				}
				out[id] += max(ref.Size, 1)
			}
		}
	}
	return out
}

// cacheSizes returns, per connected host, how many blobs its cache holds as far as the
// server knows.
func (r *hostRegistry) cacheSizes() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.hosts))
	for id, h := range r.hosts {
		if h.state == hostConnected {
			out[id] = len(h.cached)
		}
	}
	return out
}

// lastLaunchSince returns the latest of from and the last launch on each host of ids.
func (r *hostRegistry) lastLaunchSince(ids map[string]int64, from time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range ids {
		if h := r.hosts[id]; h != nil && h.lastLaunch.After(from) {
			from = h.lastLaunch
		}
	}
	return from
}

// fetchTime estimates how long host would take to fetch the inputs of t it does not
// hold, at the rate it fetched inputs lately (0: not measured yet).
func (r *hostRegistry) fetchTime(host string, t *store.Task) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hosts[host]
	if h == nil || h.fetchRate <= 0 {
		return 0
	}
	var missing int64
	for _, ref := range t.InputBlobs {
		if _, ok := h.cached[ref.Digest]; !ok {
			missing += ref.Size
		}
	}
	return time.Duration(float64(missing) / h.fetchRate * float64(time.Second))
}

// launched records the placement of t on a guest of host at now: the host's last
// launch and, when the host stages t's inputs (shared), the inputs noted in its cache
// and the time of the placement, which its Staged report measures (fetchMeasured).
func (r *hostRegistry) launched(host string, t *store.Task, now time.Time, shared bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hosts[host]; h != nil {
		h.lastLaunch = now
	}
	if !shared {
		return
	}
	r.noteCachedLocked(host, t.InputBlobs, now)
	if r.placedAt == nil {
		r.placedAt = map[string]time.Time{}
	}
	r.placedAt[t.ID] = now
	if len(r.placedAt) > passedOverPrune {
		for id, at := range r.placedAt { // tasks whose host never answered
			if now.Sub(at) > 10*time.Minute {
				delete(r.placedAt, id)
			}
		}
	}
}

// fetchMeasured updates host's fetch rate from its Staged report of a task placed on
// it: the bytes it fetched over the time from the placement to the report (the cost a
// placement there pays, queueing and sharing the link with other fetches included).
func (r *hostRegistry) fetchMeasured(host string, m *hostv1.Staged, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.placedAt[m.GetTaskId()]
	if !ok {
		return
	}
	delete(r.placedAt, m.GetTaskId())
	h := r.hosts[host]
	if h == nil || m.GetError() != "" || m.GetFetchedBytes() < minRateSample || !now.After(at) {
		return
	}
	rate := float64(m.GetFetchedBytes()) / now.Sub(at).Seconds()
	if h.fetchRate == 0 {
		h.fetchRate = rate
	} else {
		h.fetchRate += 0.3 * (rate - h.fetchRate)
	}
}

// list returns what operators see of every host, sorted by id.
func (r *hostRegistry) list() []HostInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []HostInfo
	for _, h := range r.hosts {
		hi := HostInfo{ID: h.id, State: h.state, Version: h.version, Accel: h.accel, CPUs: h.cpus, MemoryBytes: h.memory,
			Load: h.load, Guests: len(h.guests), ConnectedAt: h.connectedAt, LastSeen: h.lastSeen}
		for _, n := range h.poolOrder {
			hi.Pools = append(hi.Pools, h.pools[n])
		}
		out = append(out, hi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// guests returns the guests of every host (only host's when it is not empty) as their
// hosts last reported them, in no order, without their agents' state.
func (r *hostRegistry) guests(host string) []VMInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []VMInfo
	for _, h := range r.hosts {
		if host != "" && h.id != host {
			continue
		}
		for _, g := range h.guests {
			out = append(out, VMInfo{Host: h.id, Guest: g})
		}
	}
	return out
}

// poolsServing describes the pools of connected hosts that serve typ, one line each
// ("pool on host h (state; ...)"), in no order.
func (r *hostRegistry) poolsServing(typ string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var pools []string
	for _, h := range r.hosts {
		if h.state != hostConnected {
			continue
		}
		for _, n := range h.poolOrder {
			p := h.pools[n]
			if !slices.Contains(p.GetTaskTypes(), typ) {
				continue
			}
			d := fmt.Sprintf("%s on host %s (%s", n, h.id, p.GetState())
			if b := p.GetBlocked(); len(b) > 0 {
				d += "; cannot scale up: short of " + strings.Join(b, ", ")
			}
			if e := p.GetError(); e != "" {
				d += "; " + e
			}
			pools = append(pools, d+")")
		}
	}
	return pools
}

// addTypes adds to known the task types of every host's pools.
func (r *hostRegistry) addTypes(known map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.hosts {
		for _, p := range h.pools {
			for _, n := range p.GetTaskTypes() {
				known[n] = true
			}
		}
	}
}
