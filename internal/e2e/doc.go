// Package e2e holds end-to-end tests of the real `paddock` binary: `paddock dev` (the
// server, the host daemon and a warm pool of real micro-VM guests in one process)
// driven from outside, as a user would.
//
//   - TestDevDemo runs the demo scenario (package demo: checksum, log scan, three
//     scored submissions into a leaderboard, a task that fails once and succeeds on its
//     retry) through the paddock CLI against `paddock dev` and checks every printed
//     result with demo.Check; then stops it with SIGINT and checks its guests are gone.
//   - TestDevCrashRestart kills `paddock dev` with SIGKILL once its guests are up,
//     starts it again on the same data directory, and checks the first run's guests
//     are gone (virsh list) and a task succeeds.
//   - TestDevBadInput: no kernel, libvirt down, a port taken, the data directory in use
//     — each a clear message naming the fix.
//
// The tests build bin/paddock-like binaries into a temporary directory (the handlers
// and the agent stripped, so that guests of 1 vCPU and 256 MiB hold them), run
// `paddock dev` on free ports with a temporary data directory, and name their guests
// with a prefix of their own (PADDOCK_HYPERVISOR_PREFIX=paddock-e2e<random>-), which
// their cleanup destroys even when a test fails. The guest tests need root, libvirtd
// and virtlogd (`make setup`) and a kernel in /boot; they skip without them, or fail
// under PADDOCK_REQUIRE_VM=1:
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -v ./internal/e2e/
package e2e
