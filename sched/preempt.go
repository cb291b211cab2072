package sched

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Online vs batch. The store's Ready returns a type's online tasks before its batch
// ones, so the dispatcher gives every free slot to online work first. When online
// tasks of a type wait and no connected agent has a free slot for it, preemptForOnline
// takes slots back from batch tasks: for each waiting online task (less the
// preemptions still under way for the type) it picks a running batch task in a slot
// the online task could use (the same type, or another type on an agent whose total is
// what is full; an agent that meets the online task's requirements), ends that attempt
// in the store at once as preempted (requeued with no backoff, the attempt not charged
// against max_attempts: store.Update.Preempted), and sends the agent a cancel of kind
// PREEMPTED, upon which the agent stops the handler and drops the task without
// reporting.
//
// The slot then goes to the online task in one of two ways:
//   - Hand-over (an agent whose Register lists agentv1.CapPreemptHandover): the server
//     leases the online task to that agent at once and sends its Assign right behind
//     the cancel, naming the preempted task in replaces_task_id; the server's booking
//     of the slot passes from the batch task to the online one without ever being free.
//     The agent frees the preempted task's slot and starts the online task while the
//     batch handler is still being torn down: for that moment the agent runs one task
//     over its limit per preempted slot, never more (each Assign replaces one cancelled
//     run, once). No heartbeat lies on the online task's path.
//   - Otherwise (an older agent, or the online task could not be leased): the server
//     keeps the slot booked (under the key preemptPrefix+task id) until a heartbeat of
//     the agent no longer lists the task, so the online task is not assigned to an
//     agent whose slot is still busy; then the dispatcher leases it the freed slot.
//
// An agent that never answers keeps the ordinary guarantees: the online task's lease
// expires like any other, and the batch task was requeued when it was preempted.

// preemptPrefix keys, in agent.running, the slot of a preempted task still stopping.
const preemptPrefix = "preempted:"

// preemptForOnline preempts batch tasks for the online tasks waiting for a slot. Unless
// all is set (the dispatcher's periodic round), it reads the store's queue only of the
// full types hinted ready (wakeType): a type whose slots are all taken by transient
// stream tasks, with nothing stored queued, costs no store query each dispatch round.
func (s *Server) preemptForOnline(ctx context.Context, all bool) {
	now := time.Now()
	s.agents.mu.Lock()
	full := map[string]bool{} // type -> no connected agent has a free slot for it
	for _, a := range s.agents.byID {
		if a.state != agentConnected || a.gone {
			continue
		}
		for n := range a.types {
			if _, seen := full[n]; !seen {
				full[n] = true
			}
			if a.free(n) > 0 {
				full[n] = false
			}
		}
	}
	s.agents.mu.Unlock()
	for typ, isFull := range full {
		if !isFull || ctx.Err() != nil {
			continue
		}
		if _, hinted := s.readyHint(typ); !all && !hinted {
			continue
		}
		// Only batch tasks were queued since the last look found no online one ready:
		// none can wait, and under a backlog of batch tasks (every round, after every
		// submit and every report) this costs no store query. The periodic round (all),
		// and every round over a store other replicas share, look anyway: online tasks
		// whose backoff ran out, or queued by another replica or before a restart.
		gen, hintedOnline := s.onlineHint(typ)
		if !all && !hintedOnline && !s.shared {
			continue
		}
		// Online tasks alone: a full type with only batch tasks queued (the common case
		// under load, after every dispatch round) reads no row, in one query (Ready read
		// the batch queue too, a second query and a row, every round).
		online, err := s.st.ReadyOnline(ctx, typ, now, 64)
		if err != nil {
			s.log.Error("finding online tasks to preempt for", "type", typ, "err", err)
			continue
		}
		if len(online) == 0 {
			s.clearOnline(typ, gen)
			continue
		}
		s.agents.mu.Lock()
		online = s.fairOrder(online) // leaves out tenants at their max_running
		s.agents.mu.Unlock()
		need := len(online) - s.stopping(typ)
		for i := 0; i < need; i++ {
			v, ok := s.victim(&online[i])
			if !ok {
				break
			}
			s.preempt(ctx, v, &online[i], now)
		}
	}
}

type victim struct {
	agentID, taskID string
	leaseID         uint64
	sess            *session // the agent's session when picked
}

// stopping counts the preempted tasks whose slots for typ are still booked.
func (s *Server) stopping(typ string) int {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	n := 0
	for _, a := range s.agents.byID {
		for key, as := range a.running {
			if strings.HasPrefix(key, preemptPrefix) && (as.typ == typ || a.types[typ] != nil) {
				n++
			}
		}
	}
	return n
}

// queuedOnline notes t if it is an online task now queued (observedStore, after each
// change this server made): preemptForOnline then looks for online tasks of its type.
func (s *Server) queuedOnline(t store.Task) {
	if t.State != store.Queued || t.Class != store.Online {
		return
	}
	s.readyMu.Lock()
	s.onlineGen.hint(t.Type)
	s.readyMu.Unlock()
}

// onlineHint returns the online hint generation of typ and whether it is hinted.
func (s *Server) onlineHint(typ string) (uint64, bool) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	return s.onlineGen.get(typ)
}

// clearOnline drops the online hint of typ unless it was hinted again since gen.
func (s *Server) clearOnline(typ string, gen uint64) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.onlineGen.clear(typ, gen)
}

// victim picks a running batch task whose slot the online task on could take.
func (s *Server) victim(on *store.Task) (victim, bool) {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	for _, a := range s.agents.byID {
		ts := a.types[on.Type]
		if ts == nil || a.sess == nil || !a.takesWork() || a.unmet(on.Requirements) != "" {
			continue
		}
		for key, as := range a.running {
			if as.class != store.Batch || !as.acked || as.leaseID == 0 || strings.HasPrefix(key, preemptPrefix) || strings.HasPrefix(key, transientPrefix) {
				continue
			}
			// The same type, or another type where the agent's total is what is full.
			if as.typ == on.Type || (ts.running < ts.slots && !a.hasFreeTotal()) {
				return victim{a.id, key, as.leaseID, a.sess}, true
			}
		}
	}
	return victim{}, false
}

// preempt ends v's attempt as preempted, requeues its task and stops it on its agent;
// the slot goes to the online task on (a hand-over) or, failing that, is booked until
// the agent's heartbeat shows the task stopped. The preemption and the online task's
// lease are one store write (UpdateLease): one commit on the online task's path, and
// the lease applies only if the preemption did.
func (s *Server) preempt(ctx context.Context, v victim, on *store.Task, now time.Time) {
	t, err := s.st.Get(ctx, v.taskID)
	if err != nil || t.LeaseID != v.leaseID || (t.State != store.Leased && t.State != store.Running) {
		return
	}
	msg := fmt.Sprintf("preempted on agent %s: its slot went to an online task of type %s (not charged as an attempt)", v.agentID, on.Type)
	u, err := store.Transition(t, store.EvPreempt, store.Change{Now: now, Error: msg, FailureKind: store.Preempted})
	if err != nil {
		return
	}
	nt, leased, err := s.st.UpdateLease(ctx, u, now, s.handOverGrants(v, on, now))
	if errors.Is(err, store.ErrConflict) {
		return // it ended meanwhile: nothing was leased either
	}
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("preempting a batch task", "task", t.ID, "for", on.ID, "err", err)
		}
		return
	}
	cancel := cancelMsg(t.ID, t.LeaseID, agentv1.CancelKind_CANCEL_KIND_PREEMPTED, "preempted for an online task")
	how := "heartbeat"
	if assign := s.handOver(v, leased, now); assign != nil {
		how = "handover"
		v.sess.send(cancel)
		v.sess.send(assign) // behind the cancel: the agent frees the slot, then admits
		s.metrics.handovers.WithLabelValues(s.metrics.types.label(on.Type)).Inc()
	} else {
		s.agents.mu.Lock()
		var sess *session
		if a := s.agents.byID[v.agentID]; a != nil {
			if as := a.running[t.ID]; as != nil && as.leaseID == t.LeaseID {
				delete(a.running, t.ID)
				a.running[preemptPrefix+t.ID] = as // booked until the agent has stopped it
			}
			sess = a.sess
		}
		s.agents.mu.Unlock()
		if sess != nil {
			sess.send(cancel)
		}
	}
	s.metrics.preemptions.WithLabelValues(s.metrics.types.label(t.Type)).Inc()
	s.log.Info("preempted a batch task for an online one", "task", t.ID, "lease", t.LeaseID, "agent", v.agentID, "for", on.ID, "slot_to_online", how)
	s.finished(nt)
	s.wakeType(nt.Type)
}

// handOverGrants is the lease of the online task on to v's agent, written with the
// preemption of v's task, when that agent takes hand-overs (nil otherwise: the slot is
// then booked until a heartbeat shows v's task stopped).
func (s *Server) handOverGrants(v victim, on *store.Task, now time.Time) []store.Grant {
	s.agents.mu.Lock()
	a := s.agents.byID[v.agentID]
	ok := v.sess != nil && v.sess.handover && a != nil && a.sess == v.sess
	s.agents.mu.Unlock()
	if !ok {
		return nil
	}
	return []store.Grant{{TaskID: on.ID, AgentID: v.agentID, ExpiresAt: now.Add(s.cfg.LeaseTTL), Secret: newSecret()}}
}

// handOver passes the slot of v's task, just preempted, to the online task leased with
// the preemption (leased: none when the agent does not take hand-overs or the task was
// no longer ready), and returns the Assign to send behind the cancel (naming v's task
// in replaces_task_id); nil, having changed nothing, when nothing was leased. In the
// rare race where the agent's session ends during the write it also returns nil, but
// the slot is the online task's by then: its lease, never sent, expires like that of
// any task lost with a session. The batch task's booking held the slot during the
// write, so it was never free for anything else; the dispatcher, the only other
// leaser, runs on this goroutine.
func (s *Server) handOver(v victim, leased []store.Task, now time.Time) *agentv1.ServerMessage {
	if len(leased) == 0 {
		return nil // taken or cancelled meanwhile, or no hand-over asked
	}
	t := &leased[0]
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	a := s.agents.byID[v.agentID]
	if a == nil {
		return nil
	}
	// The slot passes from the batch task to the online one.
	a.release(v.taskID, v.leaseID)
	as := a.book(t.ID, t.Type, t.Class, t.Tenant)
	asg := s.assignFor(a, as, t, now)
	if a.sess != v.sess {
		return nil
	}
	asg.ReplacesTaskId, asg.ReplacesLeaseId = v.taskID, v.leaseID
	return &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: asg}}
}

// releaseStopped frees the booked slots of a's preempted tasks that its heartbeat no
// longer lists as running (the agent has stopped them). Caller holds s.agents.mu.
func releaseStopped(a *agent, running []*agentv1.RunningTask) {
	listed := map[string]uint64{}
	for _, r := range running {
		listed[r.GetTaskId()] = r.GetLeaseId()
	}
	for key, as := range a.running {
		if strings.HasPrefix(key, preemptPrefix) && listed[as.taskID] != as.leaseID {
			a.release(key, 0)
		}
	}
}

// releaseSession frees the slots booked for preempted tasks assigned on session se,
// which ended (the agent stopped everything it ran). Caller holds s.agents.mu.
func releaseSession(a *agent, se *session) {
	for key, as := range a.running {
		if strings.HasPrefix(key, preemptPrefix) && as.sess == se {
			a.release(key, 0)
		}
	}
}

// observeStart records the submit→start latency of t, just started, against its type's
// online SLA (online tasks only).
func (s *Server) observeStart(t store.Task, now time.Time) {
	if t.Class != store.Online {
		return
	}
	typ := s.metrics.types.label(t.Type)
	d := now.Sub(t.CreatedAt)
	s.metrics.onlineStart.WithLabelValues(typ).Observe(d.Seconds())
	met := "met"
	if d > s.cfg.onlineSLA(t.Type) {
		met = "missed"
	}
	s.metrics.onlineStarts.WithLabelValues(typ, met).Inc()
}
