// Package internal is the parent of small helpers shared by the binaries: config
// loading (internal/config), logging (internal/logging), the CLI command tree
// (internal/cli) and test helpers (internal/testutil, internal/testguest, internal/shareguest).
package internal
