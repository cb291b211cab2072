// Package agentv1 is the generated Go code of api/agent/v1/agent.proto, the protocol
// between the agent in a guest and the server. Regenerate it with `make proto`.
package agentv1
