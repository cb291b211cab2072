package alloc

import "time"

// Snapshot is the allocation at one moment, for the scheduler (which dispatches
// a type to an agent only while Free > 0) and for operators.
type Snapshot struct {
	At    time.Time      `json:"at"`
	Total int            `json:"total"`
	InUse int            `json:"in_use"`
	Types []TypeSnapshot `json:"types"`
}

// TypeSnapshot is one type's share.
type TypeSnapshot struct {
	Name           string        `json:"name"`
	Min            int           `json:"min"`
	TolerableDelay time.Duration `json:"tolerable_delay"`
	// Limit is the number of slots the type has now (>= Min).
	Limit   int `json:"limit"`
	Running int `json:"running"`
	Waiting int `json:"waiting"`
	// Free is how many more tasks of this type would start at once.
	Free int `json:"free"`
	// Delay is the queuing delay measured over the last cycle.
	Delay time.Duration `json:"delay"`
	// GrantedLastCycle counts tasks that got a slot in the last cycle.
	GrantedLastCycle int `json:"granted_last_cycle"`
}

// Type returns the snapshot of one type and whether it exists.
func (s Snapshot) Type(name string) (TypeSnapshot, bool) {
	for _, t := range s.Types {
		if t.Name == name {
			return t, true
		}
	}
	return TypeSnapshot{}, false
}

// Snapshot returns the current allocation; Delay and GrantedLastCycle are those
// of the last completed cycle.
func (a *Allocator) Snapshot() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.snapshotLocked(a.clock.Now())
	for i := range s.Types {
		if prev, ok := a.last.Type(s.Types[i].Name); ok {
			s.Types[i].GrantedLastCycle = prev.GrantedLastCycle
		}
	}
	return s
}

func (a *Allocator) snapshotLocked(now time.Time) Snapshot {
	s := Snapshot{At: now, Total: a.total, InUse: a.inUse}
	for _, ts := range a.types {
		free := max(0, min(ts.limit-ts.running, a.total-a.inUse))
		s.Types = append(s.Types, TypeSnapshot{
			Name: ts.cfg.Name, Min: ts.cfg.Min, TolerableDelay: ts.cfg.TolerableDelay,
			Limit: ts.limit, Running: ts.running, Waiting: len(ts.queue), Free: free,
			Delay: ts.delay, GrantedLastCycle: ts.granted,
		})
	}
	return s
}
