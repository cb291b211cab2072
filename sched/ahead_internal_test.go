package sched

import (
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// TestTransientAhead: transient items go ahead of an agent's free slots only to an agent
// that takes them (queue-ahead), only once no agent has a free slot for them, at most
// the type's slots ahead; they do not count against the agent's total (its other types
// still get their slots); a freed slot lets one more go ahead; and the agent's loss
// queues every one of them again.
func TestTransientAhead(t *testing.T) {
	s := &Server{agents: newAgentRegistry(), trans: newTransients(), cfg: Config{LeaseTTL: time.Second}}
	s.metrics = newMetrics(s)
	qa := testAgent("qa", func(a *agent) {
		a.sess = &session{batch: true, queueAhead: true}
		a.types["other"] = &typeSlot{slots: 2}
		a.total = 6
	})
	plain := testAgent("plain", func(a *agent) { a.sess = &session{batch: true} })
	s.agents.add(qa)
	s.agents.add(plain)
	run := &streamRun{id: "st", typ: "echo", tmpl: store.Task{Type: "echo", MaxAttempts: 3, Timeout: time.Minute}}
	seq := uint64(0)
	push := func(n int) {
		var seqs []uint64
		for range n {
			seqs = append(seqs, seq)
			seq++
		}
		s.trans.push(s, run, seqs, make([][]byte, n))
	}
	// dispatch runs a dispatch of echo and returns, by agent, the tasks assigned and how
	// many of them went ahead.
	dispatch := func() (map[string]int, map[string]int) {
		t.Helper()
		now := time.Now()
		s.agents.mu.Lock()
		sends := s.dispatchTransient("echo", now)
		checkAhead(t, s)
		s.agents.mu.Unlock()
		got, ahead := map[string]int{}, map[string]int{}
		for _, sd := range sends {
			id := map[*session]string{qa.sess: "qa", plain.sess: "plain"}[sd.sess]
			as := sd.msg.GetBatch().GetAssigns()
			if a := sd.msg.GetAssign(); a != nil {
				as = []*agentv1.Assign{a}
			}
			for _, a := range as {
				got[id]++
				if a.GetMayQueue() {
					ahead[id]++
					if a.GetTimeoutMs() != time.Minute.Milliseconds() || time.UnixMilli(a.GetDeadlineUnixMs()).Before(now.Add(time.Minute+time.Second)) {
						t.Fatalf("ahead assign %v: want timeout_ms of the stream's timeout, and a deadline later than it", a)
					}
				} else if a.GetTimeoutMs() != 0 {
					t.Fatalf("assign %v: timeout_ms is for tasks sent ahead", a)
				}
			}
		}
		return got, ahead
	}
	queued := func() int {
		s.trans.mu.Lock()
		defer s.trans.mu.Unlock()
		return len(s.trans.queue["echo"])
	}

	push(6) // free slots for all of them: none goes ahead
	if got, ahead := dispatch(); got["qa"]+got["plain"] != 6 || len(ahead) != 0 {
		t.Fatalf("6 items, 8 free slots: assigned %v, ahead %v", got, ahead)
	}
	push(14) // 2 take the last free slots, then 4 go ahead to qa (its slots of echo), 8 wait
	got, ahead := dispatch()
	if got["qa"]+got["plain"] != 6 || ahead["qa"] != 4 || ahead["plain"] != 0 || queued() != 8 {
		t.Fatalf("14 more: assigned %v, ahead %v, %d left queued; want 2 to free slots, 4 ahead to qa, 8 left", got, ahead, queued())
	}
	s.agents.mu.Lock()
	if ts := qa.types["echo"]; ts.running != 8 || ts.ahead != 4 || qa.ahead != 4 {
		t.Fatalf("qa's echo: running %d ahead %d (agent %d); want 8 and 4", ts.running, ts.ahead, qa.ahead)
	}
	if f := qa.available("other"); f != 2 {
		t.Fatalf("qa's other type has %d free slots; want 2 (tasks ahead do not use its total)", f)
	}
	s.agents.mu.Unlock()
	if got, _ := dispatch(); len(got) != 0 {
		t.Fatalf("no room left: assigned %v", got)
	}

	// A report frees one of qa's slots: the next queued task starts there, and one more
	// may go ahead.
	s.agents.mu.Lock()
	var one string
	for id := range qa.running {
		one = id
		break
	}
	qa.release(one, 0)
	s.agents.mu.Unlock()
	if got, ahead := dispatch(); got["qa"] != 1 || ahead["qa"] != 1 || got["plain"] != 0 {
		t.Fatalf("after a report from qa: assigned %v, ahead %v; want 1 ahead to qa", got, ahead)
	}

	// qa is lost: its 8 tasks, running or queued, are queued again.
	s.agents.mu.Lock()
	s.requeueTransient(qa, qa.sess)
	left, running, aheadN := len(qa.running), qa.types["echo"].running, qa.ahead
	s.agents.mu.Unlock()
	s.agents.mu.Lock()
	checkAhead(t, s)
	s.agents.mu.Unlock()
	if left != 0 || running != 0 || aheadN != 0 || queued() != 7+8 {
		t.Fatalf("qa lost: it holds %d (echo running %d, ahead %d), %d queued; want none held, 15 queued", left, running, aheadN, queued())
	}
}

// checkAhead fails unless each type's ahead set in the index holds exactly the agents
// with room to queue tasks of the type ahead. Caller holds s.agents.mu.
func checkAhead(t *testing.T, s *Server) {
	t.Helper()
	for _, a := range s.agents.byID {
		for typ := range a.types {
			ti := s.agents.index.types[typ]
			_, in := ti.ahead[a]
			if want := a.aheadRoom(typ) > 0; in != want {
				t.Fatalf("agent %s: filed in the ahead set of %s: %v; its room is %d", a.id, typ, in, a.aheadRoom(typ))
			}
		}
	}
}
