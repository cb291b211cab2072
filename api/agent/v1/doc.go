// Package agentv1 is the generated Go code of api/agent/v1/agent.proto, the protocol
// between the agent in a guest and the server. Regenerate it with `make proto`.
package agentv1

// CapLogChunks is the server capability (Registered.capabilities) that lets an agent
// send LogChunk messages; an agent sends none to a server that does not list it.
const CapLogChunks = "log-chunks"

// CapPreemptHandover is the agent capability (Register.capabilities) that lets the
// server send an Assign naming, in replaces_task_id, the preempted batch task whose
// slot it takes; to an agent without it the server gives a preempted slot away only
// once a heartbeat shows the preempted task stopped.
const CapPreemptHandover = "preempt-handover"

// CapBatch is the capability, in both directions, of batched session messages: an agent
// whose Register lists it takes ServerBatch messages, and a server whose Registered
// lists it takes AgentBatch messages. Neither side sends a batch to a peer that does
// not list it, so old agents and servers keep working.
const CapBatch = "batch"

// CapQueueAhead is the agent capability (Register.capabilities) that lets the server send
// transient stream items ahead of the agent's free slots (Assign.may_queue): the agent
// queues them and starts each as soon as a slot of its type frees, so its slots do not
// sit idle for a round trip to the server between two items.
const CapQueueAhead = "queue-ahead"
