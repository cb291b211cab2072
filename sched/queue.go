package sched

import (
	"context"
	"sort"
	"sync"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// Queuing delay per task type, for the agents' concurrency allocators (agent/alloc).
//
// It is measured here, on the server, because this is where tasks wait for a slot:
// the dispatcher leases a type to an agent only while the type is below the limit
// the agent's allocator set, so a type that is short of slots queues in the store,
// never on the agent. Every heartbeat interval the server measures, for each type a
// connected agent serves, the longer of
//   - the age of the oldest task of the type that is ready to dispatch now (among the
//     next few hundred in dispatch order: priority, then submission), and
//   - the longest wait, from ready to leased, of the tasks of the type leased during
//     the interval,
// and how many tasks of the type are ready (counted up to a cap above any agent's
// total). It answers every agent heartbeat with these figures for the agent's types
// (QueueStatus); the agent feeds them to its allocator, which rebalances before its
// next heartbeat and sends the new limits in it. The figures are the same for every
// agent: queues are per type, not per agent. Transient streams' tasks (in memory, not
// in the store) are counted with the store's.

// QueueDelay is the measured queue of one task type.
type QueueDelay struct {
	Type string
	// Delay is the type's queuing delay over the last measurement period.
	Delay time.Duration
	// Ready counts the tasks of the type ready to dispatch (a lower bound).
	Ready int64
}

// queueMeter holds the measurements. mu guards the fields below.
type queueMeter struct {
	mu      sync.Mutex
	longest map[string]time.Duration // longest ready-to-leased wait this period, by type
	cur     map[string]QueueDelay    // the last measurement, by type
}

func newQueueMeter() *queueMeter {
	return &queueMeter{longest: map[string]time.Duration{}, cur: map[string]QueueDelay{}}
}

// leased records that tasks of typ were leased after waiting up to w.
func (q *queueMeter) leased(typ string, w time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.longest[typ] = max(q.longest[typ], w)
}

// queueLoop measures the queues every heartbeat interval until ctx is done.
func (s *Server) queueLoop(ctx context.Context) {
	everyTick(ctx, s.cfg.HeartbeatInterval, func() {
		if err := s.measureQueues(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Error("measuring queuing delays", "err", err)
		}
	})
}

// measureQueues takes one measurement of every type connected agents serve.
func (s *Server) measureQueues(ctx context.Context, now time.Time) error {
	s.agents.mu.Lock()
	types := map[string]bool{}
	limit := 1
	for _, a := range s.agents.byID {
		if a.state != agentConnected {
			continue
		}
		sum := 0
		for n, ts := range a.types {
			types[n] = true
			sum += ts.slots
		}
		limit = max(limit, a.total, sum)
	}
	s.agents.mu.Unlock()
	limit = min(limit+1, 1000)
	names := make([]string, 0, len(types))
	for typ := range types {
		names = append(names, typ)
	}
	// One read for every type, not a store read per type each heartbeat interval.
	stats, err := s.st.ReadyStats(ctx, names, now, limit)
	if err != nil {
		return err
	}
	cur := make(map[string]QueueDelay, len(types))
	for _, typ := range names {
		cur[typ] = QueueDelay{Type: typ}
	}
	for _, rs := range stats {
		if qd, ok := cur[rs.Type]; ok {
			qd.Ready, qd.Delay = rs.N, max(0, now.Sub(rs.Oldest))
			cur[rs.Type] = qd
		}
	}
	for _, typ := range names {
		if n, oldest := s.trans.ready(typ); n > 0 { // transient streams' tasks queue too
			qd := cur[typ]
			qd.Ready += int64(n)
			qd.Delay = max(qd.Delay, now.Sub(oldest))
			cur[typ] = qd
		}
	}
	s.queue.mu.Lock()
	for typ, w := range s.queue.longest {
		if qd, ok := cur[typ]; ok {
			qd.Delay = max(qd.Delay, w)
			cur[typ] = qd
		}
	}
	clear(s.queue.longest)
	s.queue.cur = cur
	s.queue.mu.Unlock()
	return nil
}

// queueStatus is the last measurement of a's types, or nil when there is none, when
// nothing waits for any of them, or when a serves one type. An agent's allocator shares
// its slots among its types by these figures; with one type it gives that type every
// slot whatever they say, so the message would change nothing on the agent: not sending
// it saves a message per agent per heartbeat (a thousand a second with a thousand
// agents). Operators see such an agent's delay as the server measured it (Agents).
func (s *Server) queueStatus(a *agent) *agentv1.QueueStatus {
	s.agents.mu.Lock()
	if len(a.types) < 2 {
		s.agents.mu.Unlock()
		return nil
	}
	names := make([]string, 0, len(a.types))
	for n := range a.types {
		names = append(names, n)
	}
	s.agents.mu.Unlock()
	sort.Strings(names)
	s.queue.mu.Lock()
	defer s.queue.mu.Unlock()
	var qs agentv1.QueueStatus
	waits := false
	for _, n := range names {
		if qd, ok := s.queue.cur[n]; ok {
			qs.Types = append(qs.Types, &agentv1.TypeQueue{Type: n, DelayMs: qd.Delay.Milliseconds(), Ready: qd.Ready})
			waits = waits || qd.Ready > 0 || qd.Delay.Milliseconds() > 0
		}
	}
	// Nothing waits for any of its types: the agent's allocator starts every cycle from
	// no observation, which is what an all-zero status would tell it, so none is sent
	// (an idle guest then wakes once a heartbeat, to send it, and not also to read this).
	if !waits {
		return nil
	}
	return &qs
}

// QueueDelays returns the last measurement of every type connected agents serve,
// sorted by type.
func (s *Server) QueueDelays() []QueueDelay {
	s.queue.mu.Lock()
	defer s.queue.mu.Unlock()
	out := make([]QueueDelay, 0, len(s.queue.cur))
	for _, qd := range s.queue.cur {
		out = append(out, qd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}
