// Package hostv1 is the generated Go code of api/host/v1/host.proto, the protocol between
// a host daemon and the server's cluster port. Regenerate it with `make proto`.
package hostv1
