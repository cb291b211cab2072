// Package handlerpb is the generated Go code of plugins/proto/handler.proto, the protocol
// between the agent's runner and a handler plugin. Regenerate it with `make proto`.
package handlerpb
