package sched

import (
	"sync"
	"time"
)

// agentRegistry is the server's view of the agents connected to it: each agent's
// record (its slots, its leases, its session), the agent index that placement draws
// from (agentindex.go), the agent-port connections bound to agent sessions, and the
// dispatcher's locality waits.
//
// mu guards the fields below and every field of every agent in byID, of their
// assignments and typeSlots, and of the index. Code that reads or changes an agent
// holds mu for as long as it does (a dispatch round holds it while it picks agents and
// reserves their slots, and again while it records the leases the store granted).
//
// localWait and passedOver are the dispatcher's state, not the agents': they live here
// because pickNear reads and writes them in the same hold of mu in which it picks an
// agent and reserves its slot, so a third lock would be taken on every placement for
// nothing (only the dispatch loop touches them).
//
// Lock order (doc.go): mu may be held while calling the host registry (hostRegistry:
// its methods take its own lock), never the reverse; nothing holds mu while calling
// the store or blocking on a send (an agent session's send and a host link's send
// queue the message and never block).
type agentRegistry struct {
	mu    sync.Mutex
	byID  map[string]*agent // the agents by id
	index *agentIndex       // the agents available per type (agentindex.go)
	conns map[string]string // agent-port connection (peer address) -> agent id of its session

	// localWait: types of which a task waited for a slot near its inputs in the last
	// dispatch round; passedOver: when each task waiting for locality first let a free
	// slot elsewhere go (locality.go).
	localWait  map[string]bool
	passedOver map[string]time.Time
	// scan: how many ready tasks the dispatch rounds of a type read at least, for types
	// of which the last round passed over a ready task with a slot of the type still
	// free (no agent could take it: requirements, max tasks per VM, locality); the
	// others' rounds read as many as there are free slots (readLimit).
	scan map[string]int
}

func newAgentRegistry() *agentRegistry {
	return &agentRegistry{byID: map[string]*agent{}, index: newAgentIndex(), conns: map[string]string{}, localWait: map[string]bool{}, scan: map[string]int{}}
}

// add files a new agent a in the registry and the index. Caller holds mu.
func (r *agentRegistry) add(a *agent) {
	r.byID[a.id] = a
	r.index.add(a)
}

// drop removes a from the registry and the index. Caller holds mu.
func (r *agentRegistry) drop(a *agent) {
	r.index.drop(a)
	delete(r.byID, a.id)
}

// bind records that the agent-port connection conn carries agent id's session.
func (r *agentRegistry) bind(conn, id string) {
	r.mu.Lock()
	r.conns[conn] = id
	r.mu.Unlock()
}

// unbind forgets conn's binding if it is still to agent id.
func (r *agentRegistry) unbind(conn, id string) {
	r.mu.Lock()
	if r.conns[conn] == id {
		delete(r.conns, conn)
	}
	r.mu.Unlock()
}

// boundTo returns the agent id whose session conn carries ("": none).
func (r *agentRegistry) boundTo(conn string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns[conn]
}
