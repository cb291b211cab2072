package sched

import (
	"fmt"
	"math/rand/v2"
	"testing"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// leastPending is the reference for pick: the agents that fit t with the least pending,
// found by reading every agent.
func leastPending(s *Server, t *store.Task) map[*agent]bool {
	least := int(^uint(0) >> 1)
	best := map[*agent]bool{}
	for _, a := range s.agents.byID {
		if !a.fits(t) {
			continue
		}
		switch p := a.pending(); {
		case p < least:
			least, best = p, map[*agent]bool{a: true}
		case p == least:
			best[a] = true
		}
	}
	return best
}

// checkIndex fails unless the index files exactly the available agents, each under its
// pending count and with its free slots, and each type's free is their sum.
func checkIndex(t *testing.T, s *Server) {
	t.Helper()
	want := map[string]int{}
	for _, a := range s.agents.byID {
		for typ := range a.types {
			f := a.available(typ)
			e := a.idx[typ]
			switch {
			case f == 0 && e != nil:
				t.Fatalf("agent %s is filed under %s but not available", a.id, typ)
			case f == 0:
				continue
			case e == nil:
				t.Fatalf("agent %s has %d free slots of %s but is not filed", a.id, f, typ)
			case e.pending != a.pending() || e.free != f:
				t.Fatalf("agent %s filed under %s with pending %d free %d; has pending %d free %d", a.id, typ, e.pending, e.free, a.pending(), f)
			case s.agents.index.types[typ].byPending[e.pending][e.pos] != a:
				t.Fatalf("agent %s: its entry under %s points at another agent", a.id, typ)
			}
			want[typ] += f
		}
		for typ := range a.idx {
			if a.types[typ] == nil {
				t.Fatalf("agent %s filed under %s, which it does not serve", a.id, typ)
			}
		}
	}
	for typ, ti := range s.agents.index.types {
		n := 0
		for _, b := range ti.byPending {
			n += len(b)
		}
		if ti.free != want[typ] {
			t.Fatalf("type %s: free %d, want %d (%d agents filed)", typ, ti.free, want[typ], n)
		}
	}
}

// TestAgentIndex drives agents through random changes of their slots, the way the
// server changes them (reserve, ack, release, new slots, lost and back, total slots,
// max tasks per VM), and checks after each that the index files exactly the available
// agents and that pick draws among the least pending of those that fit.
func TestAgentIndex(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			s := &Server{agents: newAgentRegistry()}
			types := []string{"a", "b", "c"}
			for i := range 12 {
				a := testAgent(fmt.Sprintf("g%02d", i))
				a.types = map[string]*typeSlot{}
				for _, typ := range types {
					if rng.IntN(2) == 0 {
						a.types[typ] = &typeSlot{slots: 1 + rng.IntN(4)}
					}
				}
				if i%4 == 0 {
					a.capacity.Labels = map[string]string{"zone": "b"}
				}
				s.agents.add(a)
			}
			checkIndex(t, s)
			var ids []string
			for id := range s.agents.byID {
				ids = append(ids, id)
			}
			seq := 0
			for step := range 3000 {
				a := s.agents.byID[ids[rng.IntN(len(ids))]]
				typ := types[rng.IntN(len(types))]
				var op string
				switch rng.IntN(9) {
				case 0, 1: // dispatch picks an agent and books the task
					op = "pick"
					task := store.Task{Type: typ}
					if rng.IntN(4) == 0 {
						task.Requirements.Labels = map[string]string{"zone": "b"}
					}
					want := leastPending(s, &task)
					got := s.pick(&task)
					if (got == nil) != (len(want) == 0) || (got != nil && !want[got]) {
						t.Fatalf("step %d: pick %s chose %v; want one of the %d least pending that fit", step, typ, got, len(want))
					}
					if got != nil {
						seq++
						got.reserve(fmt.Sprint("t", seq), typ)
						got.assigned++
						got.reindex()
					}
				case 2: // an ack
					op = "ack"
					for _, as := range a.running {
						a.acked(as)
						break
					}
				case 3, 4: // a report, or a batch of reports filed once (holdIndexing)
					op = "release"
					n := 1
					if rng.IntN(2) == 0 {
						op, n = "release batch", 1+rng.IntN(4)
						a.holdIndexing()
					}
					for id := range a.running {
						if n--; n < 0 {
							break
						}
						a.release(id, 0)
					}
					a.releaseIndexing()
				case 5: // a heartbeat with new slots
					op = "slots"
					var tt []*agentv1.TaskType
					for _, n := range types {
						if rng.IntN(3) > 0 {
							tt = append(tt, &agentv1.TaskType{Name: n, Slots: uint32(rng.IntN(5))})
						}
					}
					s.setTypes(a, tt)
				case 6: // lost, or back
					op = "state"
					if a.state == agentConnected {
						a.state = agentLost
					} else {
						a.state = agentConnected
					}
					a.reindex()
				case 7: // total slots
					op = "total"
					a.total = rng.IntN(6)
					a.reindex()
				case 8: // max tasks per VM
					op = "max"
					a.maxTasks = rng.IntN(3) * 8
					a.reindex()
				}
				if t.Failed() {
					return
				}
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("step %d (%s on %s): %v", step, op, a.id, r)
						}
					}()
					checkIndex(t, s)
				}()
			}
		})
	}
}

// TestAgentIndexStale: a change made without filing the agent again (a host reporting
// its guest gone, a transient task booked) never makes pick choose an agent that does
// not fit: pick checks what it draws and files it again.
func TestAgentIndexStale(t *testing.T) {
	s := &Server{agents: newAgentRegistry()}
	for _, id := range []string{"a", "b", "c"} {
		a := testAgent(id)
		s.agents.add(a)
	}
	s.agents.byID["a"].gone = true                                  // not filed again
	s.agents.byID["b"].maxTasks, s.agents.byID["b"].assigned = 1, 1 // neither
	task := store.Task{Type: "echo"}
	for range 100 {
		if a := s.pick(&task); a == nil || a.id != "c" {
			t.Fatalf("picked %v; want c, the only agent that fits", a)
		}
	}
	checkIndex(t, s)
	s.agents.byID["c"].state = agentLost
	if a := s.pick(&task); a != nil {
		t.Fatalf("picked %s; want none (no agent fits)", a.id)
	}
	checkIndex(t, s)
}
