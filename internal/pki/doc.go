// Package pki makes and loads the certificates of the cluster port's mutual TLS:
// a CA, the server's certificate and one client certificate per host daemon whose
// Subject Common Name is the host id (the server takes a host's identity from it).
//
// Dev mode (`paddock server --dev`) calls EnsureDevCA, which writes a CA and a server
// certificate under <data_dir>/pki once; `paddock host` in dev mode loads that CA
// (key included, same machine) and issues itself a host certificate for its host id
// with IssueHost. Outside dev mode the files come from configuration (ServerTLS,
// HostTLS) and are made by the operator's own CA.
//
// Tests: go test ./internal/pki
package pki
