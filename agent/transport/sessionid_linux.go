//go:build linux

package transport

import (
	"crypto/rand"

	"golang.org/x/sys/unix"
)

// sessionRandom fills b for a session id without waiting for the kernel's CRNG to be
// initialised: getrandom(GRND_INSECURE) (Linux 5.6 on), else crypto/rand.
//
// A session id is not a secret: it only tells sessions on one stream apart, so that
// stale frames of an ended session are never taken for the current one. It must not
// wait: crypto/rand (getrandom with no flags) blocks until the CRNG is seeded, which
// in a freshly booted guest without a hardware RNG (TCG, no virtio-rng) took ~1.8 s —
// most of the time between the agent's ready line and its registration. A guest
// restored from a snapshot reseeds the kernel RNG from the host's seed before its
// first HELLO (agent/identity.go), so its clones still draw different ids.
func sessionRandom(b []byte) {
	for len(b) > 0 {
		n, err := unix.Getrandom(b, unix.GRND_INSECURE)
		if err != nil {
			_, _ = rand.Read(b) // kernels before 5.6 reject the flag
			return
		}
		b = b[n:]
	}
}
