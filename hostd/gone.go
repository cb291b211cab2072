package hostd

import (
	"sync"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
)

// goneSet holds guest-gone news for the server until the control stream's sender takes
// it. It never drops news: it is keyed by guest name (a guest goes once; a second
// report of the same guest keeps the first reason), so it holds at most one entry per
// guest not yet reported, and what a broken stream did not send is sent on the next.
type goneSet struct {
	wake chan struct{} // a token when the set is not empty

	mu    sync.Mutex // guards the fields below
	by    map[string]*hostv1.GuestGone
	order []string // names in arrival order
}

func newGoneSet() *goneSet {
	return &goneSet{wake: make(chan struct{}, 1), by: map[string]*hostv1.GuestGone{}}
}

// put queues g unless news of the same guest waits already.
func (s *goneSet) put(g *hostv1.GuestGone) {
	s.mu.Lock()
	if _, ok := s.by[g.GetName()]; !ok {
		s.by[g.GetName()] = g
		s.order = append(s.order, g.GetName())
	}
	s.mu.Unlock()
	s.signal()
}

func (s *goneSet) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take returns and removes everything queued, oldest first.
func (s *goneSet) take() []*hostv1.GuestGone {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*hostv1.GuestGone, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, s.by[n])
	}
	s.by, s.order = map[string]*hostv1.GuestGone{}, nil
	return out
}

// putBack queues gs (taken, not sent) ahead of what came since.
func (s *goneSet) putBack(gs []*hostv1.GuestGone) {
	if len(gs) == 0 {
		return
	}
	s.mu.Lock()
	var order []string
	for _, g := range gs {
		if _, ok := s.by[g.GetName()]; !ok {
			s.by[g.GetName()] = g
			order = append(order, g.GetName())
		}
	}
	s.order = append(order, s.order...)
	s.mu.Unlock()
	s.signal()
}

// len returns how many guests' news wait.
func (s *goneSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}
