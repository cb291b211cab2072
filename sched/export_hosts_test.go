package sched

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
