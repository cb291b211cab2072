// Package paddockv1connect is the generated connect-go code of the client API
// (api/paddock/v1/paddock.proto): gRPC and JSON over HTTP. Regenerate it with `make proto`.
package paddockv1connect
