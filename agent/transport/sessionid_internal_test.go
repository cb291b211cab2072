package transport

import "testing"

// Session ids come from the kernel without waiting for its CRNG: they must still be
// non-zero and distinct.
func TestNewSessionIDsDistinct(t *testing.T) {
	seen := map[uint64]bool{}
	for range 10000 {
		id := newSessionID()
		if id == 0 || seen[id] {
			t.Fatalf("session id %016x is zero or repeated after %d ids", id, len(seen))
		}
		seen[id] = true
	}
}
