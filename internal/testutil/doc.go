// Package testutil holds test helpers shared across Paddock's packages.
//
// Integration tests call the Require* helpers. Each skips the test with a message that
// says how to enable it — unless PADDOCK_REQUIRE_VM=1 is set (as in CI, .ci/run), in
// which case the missing dependency is a test failure instead of a skip.
package testutil
