// Package paddockv1 is the generated Go code of api/paddock/v1/paddock.proto, the client
// API. Regenerate it with `make proto`.
package paddockv1
