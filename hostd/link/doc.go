// Package link is the host daemon's client side of the host protocol (api/host/v1)
// that needs no cgo: dialing the server's cluster port over mutual TLS (one server, or
// several replicas as a comma-separated list: pick_first over the shuffled list, moving
// to another when one dies), and Relay streams as net.Conns. Package hostd uses it; so do the server's tests.
//
// Tests: go test ./hostd/link (and the server's host protocol tests in package sched).
package link
