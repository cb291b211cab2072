package sched

import (
	"fmt"
	"testing"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// testAgent is a connected agent serving echo with 4 slots, changed by opts.
func testAgent(id string, opts ...func(*agent)) *agent {
	a := &agent{id: id, state: agentConnected, running: map[string]*assignment{},
		types:    map[string]*typeSlot{"echo": {slots: 4}},
		capacity: store.Requirements{CPUMillis: 1000, MemoryBytes: 1 << 30, Labels: map[string]string{"zone": "a"}}}
	for _, o := range opts {
		o(a)
	}
	return a
}

// busy gives a n running tasks of echo.
func busy(n int) func(*agent) {
	return func(a *agent) {
		for i := 0; i < n; i++ {
			a.reserve(fmt.Sprintf("%s-run%d", a.id, i), "echo")
			a.acked(a.running[fmt.Sprintf("%s-run%d", a.id, i)])
		}
	}
}

func cpuAt(p float64) func(*agent) { return func(a *agent) { a.load = &agentv1.Load{CpuPercent: p} } }

// TestPick: placement, as a table. Each case names the agents that may be picked (want);
// pick runs many times, so that a random choice that may pick any other agent fails.
func TestPick(t *testing.T) {
	echo := store.Task{ID: "t", Type: "echo"}
	withReq := func(r store.Requirements) store.Task { t := echo; t.Requirements = r; return t }
	for _, tc := range []struct {
		name   string
		agents []*agent
		task   store.Task
		want   []string // agents that may be picked; none: nil
	}{
		{"no agent", nil, echo, nil},
		{"type not served", []*agent{testAgent("a")}, store.Task{ID: "t", Type: "other"}, nil},
		{"the only fit", []*agent{testAgent("a")}, echo, []string{"a"}},
		{"least pending wins", []*agent{testAgent("a", busy(2)), testAgent("b", busy(1)), testAgent("c", busy(3))}, echo, []string{"b"}},
		{"type slots full", []*agent{testAgent("a", busy(4)), testAgent("b", busy(3))}, echo, []string{"b"}},
		{"all slots full", []*agent{testAgent("a", busy(4))}, echo, nil},
		{"total slots full", []*agent{testAgent("a", busy(2), func(a *agent) { a.total = 2 }), testAgent("b", busy(3))}, echo, []string{"b"}},
		{"lost agent", []*agent{testAgent("a", func(a *agent) { a.state = agentLost }), testAgent("b", busy(3))}, echo, []string{"b"}},
		{"guest reported gone", []*agent{testAgent("a", func(a *agent) { a.gone = true }), testAgent("b", busy(3))}, echo, []string{"b"}},
		{"max tasks per VM reached", []*agent{testAgent("a", func(a *agent) { a.maxTasks, a.assigned = 1, 1 }), testAgent("b", busy(3))}, echo, []string{"b"}},
		{"max tasks per VM not reached", []*agent{testAgent("a", func(a *agent) { a.maxTasks, a.assigned = 2, 1 }), testAgent("b", busy(3))}, echo, []string{"a"}},
		{"too many unacknowledged", []*agent{testAgent("a", func(a *agent) { a.unacked = MaxUnacked }), testAgent("b", busy(3))}, echo, []string{"b"}},
		{"cpu requirement", []*agent{testAgent("a"), testAgent("b", busy(3), func(a *agent) { a.capacity.CPUMillis = 4000 })},
			withReq(store.Requirements{CPUMillis: 2000}), []string{"b"}},
		{"memory requirement", []*agent{testAgent("a"), testAgent("b", busy(3), func(a *agent) { a.capacity.MemoryBytes = 8 << 30 })},
			withReq(store.Requirements{MemoryBytes: 4 << 30}), []string{"b"}},
		{"label requirement", []*agent{testAgent("a"), testAgent("b", busy(3), func(a *agent) { a.capacity.Labels = map[string]string{"zone": "b"} })},
			withReq(store.Requirements{Labels: map[string]string{"zone": "b"}}), []string{"b"}},
		{"requirement nobody meets", []*agent{testAgent("a"), testAgent("b")}, withReq(store.Requirements{Labels: map[string]string{"gpu": "yes"}}), nil},
		// Two random choices among the tied: of two agents, the less loaded one always wins.
		{"two tied: lower CPU wins", []*agent{testAgent("a", cpuAt(90)), testAgent("b", cpuAt(10))}, echo, []string{"b"}},
		// Of three tied, the most loaded can never win a draw of two.
		{"three tied: the most loaded never", []*agent{testAgent("a", cpuAt(90)), testAgent("b", cpuAt(10)), testAgent("c", cpuAt(50))}, echo, []string{"b", "c"}},
		{"ties only among the least pending", []*agent{testAgent("a", cpuAt(0), busy(1)), testAgent("b", cpuAt(80)), testAgent("c", cpuAt(90))}, echo, []string{"b"}},
		// The same with requirements (pick reads the agents that fit, not a draw of two).
		{"requirement equal to the capacity fits", []*agent{testAgent("a")}, withReq(store.Requirements{CPUMillis: 1000, MemoryBytes: 1 << 30}), []string{"a"}},
		{"every label must match", []*agent{testAgent("a", func(a *agent) { a.capacity.Labels = map[string]string{"zone": "a", "gpu": "yes"} })},
			withReq(store.Requirements{Labels: map[string]string{"zone": "a", "gpu": "no"}}), nil},
		{"requirements: least pending among those that fit", []*agent{testAgent("a", busy(1)), testAgent("b", func(a *agent) { a.capacity.CPUMillis = 500 }), testAgent("c", busy(2))},
			withReq(store.Requirements{CPUMillis: 800}), []string{"a"}},
		{"requirements: two tied, lower CPU wins", []*agent{testAgent("a", cpuAt(90)), testAgent("b", cpuAt(10)), testAgent("c", cpuAt(0), func(a *agent) { a.capacity.MemoryBytes = 1 << 20 })},
			withReq(store.Requirements{MemoryBytes: 1 << 29}), []string{"b"}},
		{"requirements: three tied, the most loaded never", []*agent{testAgent("a", cpuAt(90)), testAgent("b", cpuAt(10)), testAgent("c", cpuAt(50))},
			withReq(store.Requirements{Labels: map[string]string{"zone": "a"}}), []string{"b", "c"}},
		{"requirements: max tasks per VM reached", []*agent{testAgent("a", func(a *agent) { a.maxTasks, a.assigned = 3, 3 }), testAgent("b", busy(3))},
			withReq(store.Requirements{CPUMillis: 500}), []string{"b"}},
		{"max tasks per VM: not counted by pending", []*agent{testAgent("a", func(a *agent) { a.maxTasks, a.assigned = 5, 4 }), testAgent("b", busy(1))}, echo, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{agents: newAgentRegistry()}
			for _, a := range tc.agents {
				s.agents.add(a)
			}
			seen := map[string]bool{}
			for i := 0; i < 200; i++ {
				task := tc.task
				a := s.pick(&task)
				if a == nil {
					seen[""] = true
					continue
				}
				seen[a.id] = true
			}
			allowed := map[string]bool{}
			for _, id := range tc.want {
				allowed[id] = true
			}
			if len(tc.want) == 0 {
				allowed[""] = true
			}
			for id := range seen {
				if !allowed[id] {
					t.Errorf("picked %q; want one of %q", id, tc.want)
				}
			}
			if len(tc.want) > 1 { // a random choice among several must reach each of them
				for _, id := range tc.want {
					if !seen[id] {
						t.Errorf("never picked %q in 200 draws; want each of %q", id, tc.want)
					}
				}
			}
		})
	}
}

// TestBookUnbook: a booking takes a slot and counts against the agent's max tasks, and
// its undoing (a lease not granted) gives both back, on every path that grants leases.
func TestBookUnbook(t *testing.T) {
	a := testAgent("a", func(a *agent) { a.maxTasks = 1 })
	if !a.fits(&store.Task{ID: "t", Type: "echo"}) {
		t.Fatal("an idle agent with max tasks 1 does not fit a task")
	}
	as := a.book("t", "echo", store.Online, "acme")
	if as.class != store.Online || as.tenant != "acme" || a.running["t"] != as {
		t.Fatalf("book returned %+v; want the task's assignment with its class and tenant", as)
	}
	if a.types["echo"].running != 1 || a.assigned != 1 || a.unacked != 1 || a.fits(&store.Task{ID: "u", Type: "echo"}) {
		t.Fatalf("after book: running %d assigned %d unacked %d; want 1 1 1 and no room (max tasks 1)", a.types["echo"].running, a.assigned, a.unacked)
	}
	a.unbook("t")
	if a.types["echo"].running != 0 || a.assigned != 0 || a.unacked != 0 || len(a.running) != 0 || !a.fits(&store.Task{ID: "u", Type: "echo"}) {
		t.Fatalf("after unbook: running %d assigned %d unacked %d pending %d; want all 0 and room again", a.types["echo"].running, a.assigned, a.unacked, len(a.running))
	}
}
