package sched

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// dispatchLoop assigns ready tasks to agents whenever something may have changed
// (a submit, a freed slot, a new agent) and at least every 200ms (retry backoffs).
func (s *Server) dispatchLoop(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	all := true        // the first round and every tick read every type's queue
	var last time.Time // when the last round ended
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
			all = true
		}
		// Under a backlog every report kicks a round for its one freed slot, and each
		// round reads more ready tasks than it leases (readyTasks' overscan): a kick
		// that comes within dispatchCoalesce of the last round waits out the rest of
		// it, so that one round serves the slots freed meanwhile. A kick after a quiet
		// spell (one task at a time) is served at once.
		if wait := dispatchCoalesce - time.Since(last); !all && wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		round := all
		for ctx.Err() == nil {
			n, err := s.dispatchOnce(ctx, all || s.fullScan.Swap(false))
			all = false
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("dispatching", "err", err)
				}
				break
			}
			if n == 0 {
				break
			}
		}
		if ctx.Err() == nil {
			s.preemptForOnline(ctx, round) // online tasks still waiting take batch tasks' slots
		}
		last = time.Now()
	}
}

// dispatchCoalesce is the least time between two dispatch rounds started by kicks.
const dispatchCoalesce = time.Millisecond

type grantFor struct {
	agent *agent
	typ   string
}

// dispatchOnce leases as many ready tasks as there are free slots, type by type, and
// pushes the assignments to the agents. It returns the number of tasks leased. Unless
// all is set, it reads the queues only of the types hinted ready (wakeType).
func (s *Server) dispatchOnce(ctx context.Context, all bool) (int, error) {
	now := time.Now()
	s.agents.mu.Lock()
	free := s.agents.index.freeSlots()
	var localWait map[string]bool // types of which a task waited for a slot near its inputs
	if len(s.agents.localWait) > 0 {
		localWait = maps.Clone(s.agents.localWait)
	}
	s.agents.mu.Unlock()
	// Each feature costs a round nothing when not in use: transient streams' tasks are
	// sent first only when some are queued, locality waits are read once per round.
	total := 0
	// Transient streams' tasks first (transient.go), of every type: to free slots, and
	// ahead to agents' queues when none is free. The tasks sent (not the messages: one
	// ServerBatch carries several) take the type's free slots.
	for typ, n := range s.sendTransients(now) {
		total += n
		if f, ok := free[typ]; ok {
			free[typ] = f - n
		}
	}
	for typ, f := range free {
		if f <= 0 {
			continue
		}
		gen, hinted := s.readyHint(typ)
		if !all && !hinted {
			continue
		}
		limit := s.readLimit(typ, f)
		if localWait[typ] { // tasks waited for a slot near their inputs: look further
			limit = max(limit, localityScan)
			s.agents.mu.Lock()
			delete(s.agents.localWait, typ)
			s.agents.mu.Unlock()
		}
		tasks, err := s.readyTasks(ctx, typ, now, limit)
		if err != nil {
			return total, err
		}
		n := len(tasks) // before fair sharing leaves out tenants at their max_running
		if len(tasks) == 0 {
			s.clearReady(typ, gen)
			continue
		}
		var grants []store.Grant
		by := map[string]grantFor{}
		readyAt := map[string]time.Time{}
		s.agents.mu.Lock()
		tasks = s.fairOrder(tasks)
		passed := false // a task no agent could take, with a slot of the type still free
		for i := range tasks {
			t := &tasks[i]
			a := s.pickNear(t, now)
			if a == nil {
				passed = passed || len(grants) < f
				continue
			}
			a.book(t.ID, t.Type, t.Class, t.Tenant)
			grants = append(grants, store.Grant{TaskID: t.ID, AgentID: a.id, ExpiresAt: now.Add(s.cfg.LeaseTTL), Secret: newSecret()})
			by[t.ID] = grantFor{a, t.Type}
			readyAt[t.ID] = t.CreatedAt
			if t.NotBefore.After(t.CreatedAt) {
				readyAt[t.ID] = t.NotBefore
			}
		}
		rescan := s.nextScan(typ, f, limit, n, passed)
		s.agents.mu.Unlock()
		if rescan {
			s.wakeType(typ) // read again at once, further: the tasks passed over may hide others
		}
		if len(grants) == 0 {
			continue
		}
		leased, err := s.st.Lease(ctx, now, grants)
		if err != nil {
			s.agents.mu.Lock()
			for id, g := range by {
				g.agent.unbook(id)
			}
			s.agents.mu.Unlock()
			return total, fmt.Errorf("leasing %d tasks of type %s: %w", len(grants), typ, err)
		}
		var sends roundSends // one message per agent for the round, usually
		s.agents.mu.Lock()
		got := map[string]bool{}
		for i := range leased {
			t := &leased[i]
			got[t.ID] = true
			g := by[t.ID]
			as := g.agent.running[t.ID]
			if as == nil { // cannot happen: reserved above under the same id
				continue
			}
			asg := s.assignFor(g.agent, as, t, now)
			if g.agent.sess != nil {
				sends.add(g.agent.sess, &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: asg}})
			}
		}
		for id, g := range by {
			if !got[id] {
				g.agent.unbook(id)
			}
		}
		s.agents.mu.Unlock()
		sends.send()
		var longest time.Duration
		for i := range leased {
			w := now.Sub(readyAt[leased[i].ID])
			longest = max(longest, w)
			s.metrics.dispatchLatency.WithLabelValues(s.metrics.types.label(typ)).Observe(w.Seconds())
		}
		s.queue.leased(typ, longest)
		total += len(leased)
		switch {
		case n < limit && len(leased) == n:
			s.clearReady(typ, gen) // the type's ready queue is drained
		case !hinted:
			s.wakeType(typ) // found by a full read and not drained: read it again on the next kick
		}
	}
	return total, nil
}

// readLimit is how many ready tasks of typ a dispatch round reads for f free slots:
// f while every task the type's rounds read could be placed (any of them takes any free
// slot), more after a round passed over tasks no agent could take (nextScan), and
// never more than maxScan. With tenants configured it reads 2f+8 at least (fair sharing
// reorders what it reads).
func (s *Server) readLimit(typ string, f int) int {
	s.agents.mu.Lock()
	limit := max(f, s.agents.scan[typ])
	s.agents.mu.Unlock()
	if len(s.cfg.Tenants) > 0 {
		limit = max(limit, 2*f+8)
	}
	return min(limit, maxScan)
}

// maxScan bounds the ready tasks one dispatch round reads per type: a type whose first
// maxScan ready tasks no agent can take leaves the ones behind them waiting.
const maxScan = 1000

// nextScan sets how far typ's next rounds read after a round that read n ready tasks
// (limit asked) for f free slots and passed over some with a slot still free (passed):
// twice as far (at least 2f+8) when it read all it asked, unchanged when it read the
// whole queue, back to the free slots when it passed over none. It reports whether to
// read again at once. Caller holds s.agents.mu.
func (s *Server) nextScan(typ string, f, limit, n int, passed bool) bool {
	switch {
	case !passed:
		delete(s.agents.scan, typ)
	case n == limit && limit < maxScan:
		s.agents.scan[typ] = min(max(2*limit, 2*f+8), maxScan)
		return true
	}
	return false
}

// assignFor records on as (agent a's reservation of t) the lease t now holds, tells a's
// host the task started, and returns the Assign for the agent. Caller holds s.agents.mu.
func (s *Server) assignFor(a *agent, as *assignment, t *store.Task, now time.Time) *agentv1.Assign {
	as.leaseID, as.secret, as.renewedUntil = t.LeaseID, t.LeaseSecret, t.LeaseExpiresAt
	snap := *t
	snap.Payload, snap.Inputs = nil, nil // the agent has them; the server need not keep them
	as.leased = &snap
	path := s.dataPath(a)
	var stage map[string]store.BlobRef
	if path == agentv1.DataPath_DATA_PATH_SHARED {
		stage = t.InputBlobs
		s.hosts.noteCached(a.hostID, t.InputBlobs, now) // the host fetches them now
	}
	s.guestTaskStarted(a, t, stage)
	var maxOut int64
	if path != agentv1.DataPath_DATA_PATH_UNSPECIFIED {
		maxOut = s.cfg.MaxOutputBytes
	}
	var deadline int64
	if t.Timeout > 0 {
		as.deadline = now.Add(t.Timeout)
		deadline = as.deadline.UnixMilli()
	}
	return &agentv1.Assign{
		TaskId: t.ID, LeaseId: t.LeaseID, Type: t.Type, Payload: t.Payload, Inputs: t.Inputs,
		Attempt: uint32(t.Attempt), DeadlineUnixMs: deadline, LeaseExpiresUnixMs: t.LeaseExpiresAt.UnixMilli(),
		InputBlobs: agentRefs(t.InputBlobs), DataPath: path, MaxOutputBytes: maxOut, LeaseSecret: t.LeaseSecret,
	}
}

// sweepLoop expires leases and loses silent agents. It expires no lease during the
// first LeaseTTL after it starts: after a restart (however long) the agents get one
// lease TTL to reconnect and renew the leases of the tasks they still run.
func (s *Server) sweepLoop(ctx context.Context) {
	every := min(s.cfg.LeaseTTL/4, 250*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	graceEnd := time.Now().Add(s.cfg.LeaseTTL)
	var stalledUntil time.Time
	var vouched []vouchedRenewal // silent agents' leases renewed on their host's word
	last := time.Now()           // when this loop last held the registry
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.agents.mu.Lock()
		now := time.Now()
		// This loop runs far later than its period only when the server itself stalled
		// (starved of CPU, or the registry held): the agents' messages waited as long,
		// so that time is not their silence. Silence counts from the end of the stall.
		if stall := now.Sub(last) - every; stall > s.cfg.AgentTimeout/4 {
			stalledUntil = now
			s.log.Warn("the server stalled; agents' silence counts from now", "stall", stall.Round(time.Millisecond))
		}
		vouched = vouched[:0]
		for id, a := range s.agents.byID {
			seen := a.lastSeen()
			silent := now.Sub(seen)
			if seen.Before(stalledUntil) {
				silent = now.Sub(stalledUntil)
			}
			switch {
			case a.state != agentConnected || a.sess == nil || silent <= s.cfg.AgentTimeout:
				if !a.vouchedSince.IsZero() && a.state == agentConnected {
					s.log.Info("agent heard from again after its host vouched for it", "agent", id, "vouched_for", now.Sub(a.vouchedSince).Round(time.Millisecond))
				}
				a.vouchedSince = time.Time{}
			case s.vouchedFor(a, silent, now): // its host says the guest runs (vouch.go)
				if refs := s.dueLeases(a, now); len(refs) > 0 {
					vouched = append(vouched, vouchedRenewal{a, refs})
				}
			default:
				a.vouchedSince = time.Time{}
				s.log.Warn("agent missed its heartbeats; closing its session", "agent", id, "silent", silent.Round(time.Millisecond))
				a.sess.close(fmt.Errorf("no heartbeat for %v", silent.Round(time.Millisecond)))
			}
			if a.state == agentLost && now.Sub(a.lostAt) > 10*time.Minute {
				s.agents.drop(a)
			}
		}
		s.expireTransients(now)
		last = time.Now()
		s.agents.mu.Unlock()
		for _, v := range vouched {
			s.renewLeases(ctx, v.a, v.refs, now)
		}
		if now.Before(graceEnd) {
			continue
		}
		ts, err := s.st.Expired(ctx, now, 1000)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("finding expired leases", "err", err)
			}
			continue
		}
		for i := range ts {
			s.expire(ctx, ts[i], now, "")
		}
		s.scheduleTimeouts(ctx, now)
	}
}

// expire ends the lease of t, which expired: the task is requeued (after a backoff),
// dead (out of attempts) or cancelled (a cancel was requested).
func (s *Server) expire(ctx context.Context, t store.Task, now time.Time, msg string) {
	if msg == "" {
		msg = fmt.Sprintf("lease %d on agent %s expired (agent lost, or task past its timeout)", t.LeaseID, t.AgentID)
	}
	u, err := store.Transition(t, store.EvExpire, store.Change{Now: now, Error: msg, FailureKind: store.LeaseExpired, Backoff: s.backoff(t.Attempt)})
	if err != nil {
		s.log.Error("expiring lease", "task", t.ID, "err", err)
		return
	}
	to := u.To
	nt, err := s.st.Update(ctx, u)
	if errors.Is(err, store.ErrConflict) {
		return // a report or a renewal got there first
	}
	if err != nil {
		s.log.Error("expiring lease", "task", t.ID, "err", err)
		return
	}
	s.metrics.leaseExpiries.Inc()
	s.log.Warn("lease expired", "task", t.ID, "lease", t.LeaseID, "agent", t.AgentID, "now", to)
	s.agents.mu.Lock()
	var sess *session
	if a := s.agents.byID[t.AgentID]; a != nil {
		if a.release(t.ID, t.LeaseID) {
			s.guestTaskEvent(a, t.ID, t.LeaseID, hostv1.TaskEvent_KIND_FINISHED, nil)
		}
		sess = a.sess
	}
	s.agents.mu.Unlock()
	if sess != nil {
		sess.send(cancelMsg(t.ID, t.LeaseID, agentv1.CancelKind_CANCEL_KIND_EXPIRED, "lease expired"))
	}
	s.finished(nt)
	s.wakeType(nt.Type)
}

// finished records metrics and wakes waiters for a task that may have become terminal.
func (s *Server) finished(t store.Task) {
	if !t.State.Terminal() {
		return
	}
	start := t.StartedAt
	if start.IsZero() {
		start = t.CreatedAt
	}
	s.metrics.taskDuration.WithLabelValues(s.metrics.types.label(t.Type), string(t.State)).Observe(t.FinishedAt.Sub(start).Seconds())
	s.notifyTerminal(t.ID)
}

func cancelMsg(taskID string, leaseID uint64, kind agentv1.CancelKind, reason string) *agentv1.ServerMessage {
	return &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Cancel{Cancel: &agentv1.Cancel{TaskId: taskID, LeaseId: leaseID, Kind: kind, Reason: reason}}}
}

// queued reports whether any transient task waits to be dispatched (a false positive
// costs a round one look at each type's transient queue; never a false negative).
func (tr *transients) queued() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.queue) > 0
}
