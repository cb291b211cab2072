package alloc_test

import (
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/alloc"
)

// TestSimulatedLoadFavoursTighterType drives the allocator with a simulated
// load: two types arriving at the same rate with the same service time, more
// than the slots can serve, one tolerating 50ms of queuing and the other 1s.
// The tighter type must get more slots and less delay, and neither may ever be
// limited below its minimum or go a whole second without a task started.
func TestSimulatedLoadFavoursTighterType(t *testing.T) {
	const (
		tick      = 10 * time.Millisecond
		cycle     = 100 * time.Millisecond
		service   = 200 * time.Millisecond
		every     = 40 * time.Millisecond // per type: 25 tasks/s x 0.2s = 5 busy slots each
		loadUntil = 12 * time.Second
		total     = 8 // < 5+5: overloaded while the load lasts
	)
	clk := &fakeClock{t: time.Unix(1000, 0)}
	start := clk.t
	a, err := alloc.New(alloc.Config{Total: total, Clock: clk, Types: []alloc.TypeConfig{
		{Name: "loose", Min: 1, TolerableDelay: time.Second},
		{Name: "tight", Min: 1, TolerableDelay: 50 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	type job struct {
		tk     *alloc.Ticket
		typ    string
		finish time.Time
	}
	var waiting, running []*job
	limitSum := map[string]int{}
	waitSum := map[string]time.Duration{}
	started := map[string]int{}
	startedInWindow := map[string]int{}
	cycles := 0
	for now := time.Duration(0); now < 60*time.Second; now += tick {
		clk.Advance(tick)
		// Completions.
		kept := running[:0]
		for _, j := range running {
			if !clk.t.Before(j.finish) {
				j.tk.Release()
			} else {
				kept = append(kept, j)
			}
		}
		running = kept
		// Arrivals.
		if now < loadUntil && now%every == 0 {
			for _, typ := range []string{"loose", "tight"} {
				tk, err := a.Enqueue(typ)
				if err != nil {
					t.Fatal(err)
				}
				waiting = append(waiting, &job{tk: tk, typ: typ})
			}
		}
		// Grants (made during Release/Enqueue above).
		still := waiting[:0]
		for _, j := range waiting {
			if j.tk.Granted() {
				j.finish = clk.t.Add(service)
				running = append(running, j)
				started[j.typ]++
				startedInWindow[j.typ]++
				waitSum[j.typ] += j.tk.Wait()
			} else {
				still = append(still, j)
			}
		}
		waiting = still
		if (now+tick)%cycle == 0 {
			s := a.Rebalance()
			sum := 0
			for _, ts := range s.Types {
				if ts.Limit < ts.Min {
					t.Fatalf("at %v type %s limited to %d, below its minimum %d", clk.t.Sub(start), ts.Name, ts.Limit, ts.Min)
				}
				sum += ts.Limit
				if now < loadUntil {
					limitSum[ts.Name] += ts.Limit
				}
			}
			if sum != total {
				t.Fatalf("at %v limits add up to %d, want %d: %+v", clk.t.Sub(start), sum, total, s)
			}
			if s.InUse > total {
				t.Fatalf("at %v %d slots in use, total %d", clk.t.Sub(start), s.InUse, total)
			}
			if now < loadUntil {
				cycles++
			}
		}
		if (now+tick)%time.Second == 0 && now >= time.Second && now < loadUntil {
			for _, typ := range []string{"loose", "tight"} {
				if startedInWindow[typ] == 0 {
					t.Fatalf("type %s starved: no task started in the second before %v", typ, clk.t.Sub(start))
				}
			}
			clear(startedInWindow)
		}
	}
	if len(waiting) != 0 || len(running) != 0 {
		t.Fatalf("%d tasks still waiting and %d running after the load ended", len(waiting), len(running))
	}
	tightSlots := float64(limitSum["tight"]) / float64(cycles)
	looseSlots := float64(limitSum["loose"]) / float64(cycles)
	tightWait := waitSum["tight"] / time.Duration(started["tight"])
	looseWait := waitSum["loose"] / time.Duration(started["loose"])
	t.Logf("while loaded: tight %.2f slots on average, mean wait %v; loose %.2f slots, mean wait %v; started tight %d, loose %d",
		tightSlots, tightWait, looseSlots, looseWait, started["tight"], started["loose"])
	if tightSlots <= looseSlots+1 {
		t.Errorf("tight type averaged %.2f slots, loose %.2f: want the tighter type to get clearly more", tightSlots, looseSlots)
	}
	if tightWait >= looseWait {
		t.Errorf("tight type waited %v on average, loose %v: want less for the tighter type", tightWait, looseWait)
	}
	if started["tight"] != started["loose"] {
		t.Errorf("started tight %d, loose %d: every task should have run in the end", started["tight"], started["loose"])
	}
}
