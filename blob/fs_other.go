//go:build !linux

package blob

import "os"

// preallocate does nothing here: a full disk fails the writes instead.
func preallocate(f *os.File, size int64) error { return nil }
