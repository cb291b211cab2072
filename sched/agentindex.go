package sched

import (
	"math/rand/v2"

	"github.com/paddockvm/paddock/sched/store"
)

// agentIndex keeps, for each task type, the agents that may take a task of the type now
// (available: connected, not gone, under max tasks per VM and MaxUnacked, with a free
// slot of the type and of their total), grouped by how many tasks each has pending, and
// the sum of their free slots. With it a dispatch round learns the free slots of every
// type and picks an agent for a task without reading every agent: placement costs the
// same with 10 agents as with 1,000.
//
// An agent's entries change when its slots change: reserve, release and acked update
// them, as do register, setTypes, lose, and the dispatcher after booking a guest's task
// (maxTasks). A change made elsewhere that makes an agent unavailable (a host reporting
// its guest gone) is found when pick draws the agent: pick checks every agent it draws
// against its current state, and files it again if its entry is stale. No change makes
// an agent available without passing through one of the functions above. The agent
// registry's lock (agentRegistry.mu) guards the index and the agents' entries.
type agentIndex struct {
	types map[string]*typeIndex
	fit   []*agent // scratch for pick
}

// typeIndex is the available agents of one type: byPending[p] holds those with p tasks
// pending, in no order; free is the sum of their free slots of the type.
type typeIndex struct {
	byPending [][]*agent
	free      int
	// ahead holds the agents with room to queue tasks of the type ahead of their free
	// slots (aheadRoom > 0: transient.go), so that finding them does not read every
	// agent either.
	ahead map[*agent]struct{}
}

// indexEntry is where an agent is filed in one type's index: pending as filed, its
// position in byPending[pending], and the free slots it counts for.
type indexEntry struct {
	pending, pos, free int
}

func newAgentIndex() *agentIndex { return &agentIndex{types: map[string]*typeIndex{}} }

// available is how many more tasks of typ a may take now, whatever their requirements:
// 0 when it is not connected, is gone, reached its max tasks or MaxUnacked.
func (a *agent) available(typ string) int {
	if !a.takesWork() {
		return 0
	}
	return a.free(typ)
}

// takesWork reports whether a may be given a task now, whatever its slots: connected,
// not gone, under its max tasks and MaxUnacked.
func (a *agent) takesWork() bool {
	return a.state == agentConnected && !a.gone && (a.maxTasks <= 0 || a.assigned < a.maxTasks) && a.unacked < MaxUnacked
}

// reindex files a again after a change of its slots (nothing when a is not indexed).
// Between holdIndexing and releaseIndexing it only notes the change.
func (a *agent) reindex() {
	if a.holdIndex {
		a.staleIndex = true
		return
	}
	if a.index != nil {
		a.index.update(a)
	}
}

// holdIndexing defers a's reindexing until releaseIndexing, which files a once for a
// batch of changes (the assignments, acks or reports of one message). In between the
// index may be stale for a: the caller picks no agent meanwhile, or not a. Caller holds
// s.agents.mu from the one to the other.
func (a *agent) holdIndexing() { a.holdIndex = true }

// releaseIndexing ends holdIndexing and files a if anything changed meanwhile.
func (a *agent) releaseIndexing() {
	a.holdIndex = false
	if a.staleIndex {
		a.staleIndex = false
		a.reindex()
	}
}

// agentsFor is how many agents the index holds available for typ.
func (x *agentIndex) agentsFor(typ string) int {
	n := 0
	if ti := x.types[typ]; ti != nil {
		for _, b := range ti.byPending {
			n += len(b)
		}
	}
	return n
}

// add indexes a (a new agent, or one that had been dropped) and files it.
func (x *agentIndex) add(a *agent) {
	a.index = x
	x.update(a)
}

// update files a under each type it serves as it is now. Caller holds s.agents.mu.
func (x *agentIndex) update(a *agent) {
	p := a.pending()
	for typ, e := range a.idx {
		ti := x.types[typ]
		if f := a.available(typ); f > 0 {
			if e.pending != p {
				x.move(a, typ, ti, e, p)
			}
			ti.free += f - e.free
			e.free = f
			continue
		}
		x.unfile(a, typ, ti, e)
	}
	if a.sess != nil && a.sess.queueAhead || len(a.aheadIn) > 0 {
		x.fileAhead(a)
	}
	if len(a.idx) == len(a.types) {
		return // every type filed: nothing to add
	}
	for typ := range a.types {
		if a.idx[typ] != nil {
			continue
		}
		f := a.available(typ)
		if f == 0 {
			continue
		}
		ti := x.types[typ]
		if ti == nil {
			ti = &typeIndex{}
			x.types[typ] = ti
		}
		for len(ti.byPending) <= p {
			ti.byPending = append(ti.byPending, nil)
		}
		if a.idx == nil {
			a.idx = map[string]*indexEntry{}
		}
		a.idx[typ] = &indexEntry{pending: p, pos: len(ti.byPending[p]), free: f}
		ti.byPending[p] = append(ti.byPending[p], a)
		ti.free += f
	}
}

// fileAhead files a in each type's ahead set if it has room to queue tasks of the type
// ahead, and takes it out of those where it has none.
func (x *agentIndex) fileAhead(a *agent) {
	for typ := range a.aheadIn {
		if a.aheadRoom(typ) == 0 {
			delete(x.types[typ].ahead, a)
			delete(a.aheadIn, typ)
		}
	}
	for typ := range a.types {
		if a.aheadIn[typ] || a.aheadRoom(typ) == 0 {
			continue
		}
		ti := x.types[typ]
		if ti == nil {
			ti = &typeIndex{}
			x.types[typ] = ti
		}
		if ti.ahead == nil {
			ti.ahead = map[*agent]struct{}{}
		}
		ti.ahead[a] = struct{}{}
		if a.aheadIn == nil {
			a.aheadIn = map[string]bool{}
		}
		a.aheadIn[typ] = true
	}
}

// move files a, filed in typ's index ti under entry e, under p tasks pending instead
// (the entry kept: no map change).
func (x *agentIndex) move(a *agent, typ string, ti *typeIndex, e *indexEntry, p int) {
	takeOut(typ, ti, e)
	for len(ti.byPending) <= p {
		ti.byPending = append(ti.byPending, nil)
	}
	e.pending, e.pos = p, len(ti.byPending[p])
	ti.byPending[p] = append(ti.byPending[p], a)
}

// unfile removes a from the index of typ.
func (x *agentIndex) unfile(a *agent, typ string, ti *typeIndex, e *indexEntry) {
	takeOut(typ, ti, e)
	ti.free -= e.free
	delete(a.idx, typ)
}

// takeOut removes the agent of entry e from its bucket of typ's index ti (the last of
// the bucket takes its place).
func takeOut(typ string, ti *typeIndex, e *indexEntry) {
	b := ti.byPending[e.pending]
	last := len(b) - 1
	if moved := b[last]; e.pos != last {
		b[e.pos] = moved
		moved.idx[typ].pos = e.pos
	}
	b[last] = nil
	ti.byPending[e.pending] = b[:last]
}

// drop removes a from the index (it is deleted from the registry).
func (x *agentIndex) drop(a *agent) {
	for typ, e := range a.idx {
		x.unfile(a, typ, x.types[typ], e)
	}
	for typ := range a.aheadIn {
		delete(x.types[typ].ahead, a)
		delete(a.aheadIn, typ)
	}
	a.index = nil
}

// freeSlots returns the free slots of each type that has any.
func (x *agentIndex) freeSlots() map[string]int {
	free := make(map[string]int, len(x.types))
	for typ, ti := range x.types {
		if ti.free > 0 {
			free[typ] = ti.free
		}
	}
	return free
}

// current reports whether a's entry for typ matches its state (filed under p and
// available); if not it files a again and reports false.
func (x *agentIndex) current(a *agent, typ string, p int) bool {
	if a.pending() == p && a.available(typ) > 0 {
		return true
	}
	x.update(a)
	return false
}

// pick chooses an agent for t as Server.pick does (least pending among the agents that
// fit; two random choices among the tied, the lower CPU load wins), from the index: a
// task without requirements costs a draw of two, not a read of every agent. Caller
// holds s.agents.mu.
func (x *agentIndex) pick(t *store.Task) *agent {
	ti := x.types[t.Type]
	if ti == nil {
		return nil
	}
	plain := t.Requirements.CPUMillis <= 0 && t.Requirements.MemoryBytes <= 0 && len(t.Requirements.Labels) == 0
again:
	for p, b := range ti.byPending {
		if len(b) == 0 {
			continue
		}
		if plain {
			i := rand.IntN(len(b))
			a := b[i]
			if !x.current(a, t.Type, p) {
				goto again
			}
			if len(b) == 1 {
				return a
			}
			j := rand.IntN(len(b) - 1)
			if j >= i {
				j++
			}
			c := b[j]
			if !x.current(c, t.Type, p) {
				goto again
			}
			if c.cpu() < a.cpu() {
				return c
			}
			return a
		}
		fit := x.fit[:0]
		for _, a := range b {
			if a.unmet(t.Requirements) == "" {
				fit = append(fit, a)
			}
		}
		x.fit = fit
		for _, a := range fit {
			if !x.current(a, t.Type, p) {
				goto again
			}
		}
		switch len(fit) {
		case 0:
			continue
		case 1:
			return fit[0]
		}
		i := rand.IntN(len(fit))
		j := rand.IntN(len(fit) - 1)
		if j >= i {
			j++
		}
		if fit[j].cpu() < fit[i].cpu() {
			return fit[j]
		}
		return fit[i]
	}
	return nil
}
