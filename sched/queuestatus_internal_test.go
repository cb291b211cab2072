package sched

import (
	"testing"
	"time"
)

// TestQueueStatusSkipsSingleTypeAgents: an agent serving two types is sent the queue
// status of its types; one serving a single type is sent none (its allocator gives the
// type every slot whatever the status says), and operators see the server's measured
// delay for its type instead.
func TestQueueStatusSkipsSingleTypeAgents(t *testing.T) {
	s := &Server{agents: newAgentRegistry(), queue: newQueueMeter()}
	s.queue.cur = map[string]QueueDelay{
		"echo":  {Type: "echo", Delay: 300 * time.Millisecond, Ready: 50},
		"other": {Type: "other", Delay: time.Second, Ready: 5},
	}
	one := testAgent("one")
	two := testAgent("two", func(a *agent) { a.types["other"] = &typeSlot{slots: 2} })
	s.agents.add(one)
	s.agents.add(two)
	if qs := s.queueStatus(one); qs != nil {
		t.Fatalf("an agent serving one type was sent a queue status: %v", qs)
	}
	qs := s.queueStatus(two)
	if len(qs.GetTypes()) != 2 || qs.GetTypes()[0].GetType() != "echo" || qs.GetTypes()[0].GetDelayMs() != 300 || qs.GetTypes()[1].GetReady() != 5 {
		t.Fatalf("an agent serving two types was sent %v, want both types' figures", qs)
	}
	for _, ai := range s.Agents() {
		if ai.ID == "one" && ai.Types[0].Delay != 300*time.Millisecond {
			t.Fatalf("the single-type agent's delay shows as %v, want the server's measurement (300ms)", ai.Types[0].Delay)
		}
	}
}
