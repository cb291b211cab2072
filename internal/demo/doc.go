// Package demo is the demo scenario that `make demo` runs: given the address of a
// Paddock server, it drives a short, real job through the `paddock` CLI only — the
// checksum of a file, a log scan, three competition submissions scored against a
// ground truth into a leaderboard, and a task that fails, retries and then succeeds —
// printing each result as it arrives. The inputs live in examples/demo/.
//
// Every printed figure was checked by hand; the figures and the arithmetic are in
// expected.go, and Check verifies a printed run against them. Run does not know how
// the agents were started: today `make demo` (scripts/demo.sh) starts `paddock server
// --dev` and a paddock-agent over TCP; the `paddock dev` variant (guests) only needs to
// hand Run its server address.
//
// The end-to-end test runs the scenario against a real `paddock server --dev` and a
// real paddock-agent over TCP with the real example handler subprocesses:
//
//	go test -count=1 -run TestScenario ./internal/demo/
//
// It builds bin/paddock-like binaries into a temporary directory (the `paddock` build
// links libvirt through cgo, so it needs libvirt-dev: `make setup`).
package demo
