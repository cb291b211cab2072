package sched

import "time"

// SetHostLinkBuffer sets the send buffer of host links opened from now on and returns
// a function restoring it.
func SetHostLinkBuffer(n int) (restore func()) {
	old := hostLinkBuffer.Swap(int64(n))
	return func() { hostLinkBuffer.Store(old) }
}

// HoldHostLinks makes every host link's sender call hold before each Send (nil: no
// hold).
func HoldHostLinks(hold func()) {
	if hold == nil {
		hostLinkHold.Store(nil)
		return
	}
	hostLinkHold.Store(&hold)
}

// HoldRegistry holds the server's registry locks (the agent registry's, then the host
// registry's, in the lock order) for d, as a stall of the whole server (starved of CPU,
// or a long placement round) would.
func (s *Server) HoldRegistry(d time.Duration) {
	s.agents.mu.Lock()
	s.hosts.mu.Lock()
	time.Sleep(d)
	s.hosts.mu.Unlock()
	s.agents.mu.Unlock()
}
