// Package api holds the .proto definitions of the client API and of the agent protocol,
// with their generated code. The handler protocol lives in package plugins so that
// handler authors need nothing from here.
package api

// The definitions:
//
//   - api/agent/v1/agent.proto: the agent protocol (package agentv1, grpc-go), spoken by
//     agents to the server's agent port over TCP or a relayed virtio-serial stream.
//   - api/host/v1/host.proto: the host protocol (package hostv1, grpc-go), spoken by host
//     daemons to the server's cluster port over mutual TLS: registration, load and guest
//     reports, backlog and task events, and one Relay stream per guest agent session.
//   - api/paddock/v1/paddock.proto: the client API (package paddockv1, and
//     paddockv1connect for connect-go), served as gRPC and JSON over HTTP.
//
// Regenerate with `make proto` (protoc plus protoc-gen-go, protoc-gen-go-grpc and
// protoc-gen-connect-go at the versions pinned in the Makefile).
