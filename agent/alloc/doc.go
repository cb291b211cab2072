// Package alloc shares the agent's task slots among task types, after the
// "IO proxy threads fairly shared among request types" idea in DESIGN.md: a
// total number of slots; each type a guaranteed minimum; every cycle
// (Rebalance) the extra slots go to the types whose measured queuing delay is
// furthest above their tolerable delay, in multiples of it. No type is ever limited below its
// minimum, so none starves.
//
// Callers take a slot with Acquire (or Enqueue for a non-blocking ticket) and
// give it back with Ticket.Release. Snapshot exports the allocation for the
// scheduler and for operators.
//
// In Paddock the tasks queue on the server, not here: the agent's session
// (agent/session) publishes the limits in every heartbeat, the server dispatches
// each type only while it is below its limit, and answers each heartbeat with
// each type's queuing delay and backlog, which the session feeds to Observe
// before the next Rebalance; the session takes a slot per assignment with Admit. The package is pure logic with an injectable
// Clock; its tests (including a simulated load) need nothing else:
//
//	go test -count=1 ./agent/alloc
package alloc
