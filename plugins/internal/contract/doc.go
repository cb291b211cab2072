// Package contract holds what the handler SDK (plugins/sdk, the go-plugin server
// side) and the agent's runner (plugins/runner, its own go-plugin client) must
// agree on: the go-plugin handshake's magic cookie and protocol version, the
// message size limit, the log keys, and the rules a handler's Describe must meet.
//
// It imports nothing but the standard library, so the agent gets these without
// linking hashicorp/go-plugin (which plugins/sdk imports to serve). plugins/sdk
// re-exports each under its own name; its API is unchanged.
//
//	go test ./plugins/internal/contract
package contract
