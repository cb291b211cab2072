// Package demo is the demo scenario that `make demo` runs: given the address of a
// Paddock server, it drives a short, real job through the `paddock` CLI only — the
// checksum of a file, a log scan, three competition submissions scored against a
// ground truth into a leaderboard, and a task that fails, retries and then succeeds —
// printing each result as it arrives. The inputs live in examples/demo/.
//
// Every printed figure was checked by hand; the figures and the arithmetic are in
// expected.go, and Check verifies a printed run against them. Run does not know how
// the agents were started: `make demo` (scripts/demo.sh) starts `paddock dev` (the
// agents run in micro-VM guests) and hands Run its address and token; package
// internal/e2e does the same in a test.
//
// The test here runs the scenario against a real `paddock server --dev` and a real
// paddock-agent over TCP with the real example handler subprocesses (no guests):
//
//	go test -count=1 -run TestScenario ./internal/demo/
//
// It builds bin/paddock-like binaries into a temporary directory (the `paddock` build
// links libvirt through cgo, so it needs libvirt-dev: `make setup`).
package demo
