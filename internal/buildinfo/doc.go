// Package buildinfo carries the version stamped into the binaries at link time.
package buildinfo
