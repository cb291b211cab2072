// Package agentv1 is the generated Go code of api/agent/v1/agent.proto, the protocol
// between the agent in a guest and the server. Regenerate it with `make proto`.
package agentv1

// CapLogChunks is the server capability (Registered.capabilities) that lets an agent
// send LogChunk messages; an agent sends none to a server that does not list it.
const CapLogChunks = "log-chunks"
