// Package config loads Paddock's configuration with viper: a paddock.yaml file (searched
// in ./ and /etc/paddock/, or given with --config), PADDOCK_* environment variables for
// every key (dots become underscores: hypervisor.uri ↔ PADDOCK_HYPERVISOR_URI), and
// command-line flags for the common keys. It records where each effective value came
// from, for `paddock config show`.
//
// Every key is declared once in Keys with its default and help. A key in the file that
// is not declared is an error naming it, so a typo never silently falls back to a default.
// Likewise a value (file, environment or flag) that does not parse as its key's type —
// the type of its Default: duration, whole number, number, bool — or fails its OneOf or
// Check is an error at Load naming the key, the value, its source and the form wanted
// (check.go); Entries shows each value as the program reads it.
package config
