//go:build !linux

package transport

import "crypto/rand"

// sessionRandom fills b for a session id (see the Linux version).
func sessionRandom(b []byte) { _, _ = rand.Read(b) }
