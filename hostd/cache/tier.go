package cache

// tier is the byte accounting of one tier: its budget, the bytes its entries (and
// reservations for blobs on their way in) take, and its eviction policy. The cache's lock
// guards it.
type tier struct {
	name   string
	budget int64
	used   int64
	pol    Policy
}

// makeRoom evicts victims (skipping pinned ones) until n more bytes fit in the budget.
// evict removes one victim's data and returns its size; makeRoom then forgets it in the
// policy and the accounting. It reports false when pinned entries make room impossible.
func (t *tier) makeRoom(n int64, pinned func(key string) bool, evict func(key string) int64) bool {
	for t.used+n > t.budget {
		k, ok := t.pol.Victim(pinned)
		if !ok {
			return false
		}
		t.used -= evict(k)
		t.pol.Remove(k)
	}
	return true
}
