package sched

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// Batched session messages (agentv1.CapBatch). To an agent whose Register lists the
// capability, the session's sender sends the assigns and report acks it finds queued
// together as one ServerBatch; from it, the server takes AgentBatch messages. Nothing
// waits to fill a batch: a lone message goes out at once, a burst as one message.
//
// The acks and reports of transient stream tasks (memory only) are applied in the
// session's receive loop, a batch's under one lock, rather than one pipeline goroutine
// each as stored tasks' are: they need no store write to wait for.

// Bounds of one ServerBatch: items, and bytes (proto size) beyond its first item.
const (
	maxServerBatchItems = 256
	maxServerBatchBytes = 512 << 10
)

// MaxAgentBatch bounds the acks plus reports of one AgentBatch.
const MaxAgentBatch = 4096

// serverBatcher coalesces report acks and assigns into ServerBatch messages.
type serverBatcher struct {
	acks    []*agentv1.ReportAck
	assigns []*agentv1.Assign
	n       int
	bytes   int
}

// add adds m to the batch and reports whether it took it: only assigns and report
// acks, and only while the batch has room.
func (sb *serverBatcher) add(m *agentv1.ServerMessage) bool {
	if sb.n >= maxServerBatchItems {
		return false
	}
	switch m := m.GetMsg().(type) {
	case *agentv1.ServerMessage_ReportAck:
		sb.acks = append(sb.acks, m.ReportAck)
	case *agentv1.ServerMessage_Assign:
		sz := proto.Size(m.Assign)
		if sb.n > 0 && sb.bytes+sz > maxServerBatchBytes {
			return false
		}
		sb.bytes += sz
		sb.assigns = append(sb.assigns, m.Assign)
	default:
		return false
	}
	sb.n++
	return true
}

// take returns the batch as one message (nil when empty) and empties it.
func (sb *serverBatcher) take() *agentv1.ServerMessage {
	var m *agentv1.ServerMessage
	switch {
	case sb.n == 0:
		return nil
	case sb.n == 1 && len(sb.assigns) == 1:
		m = &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: sb.assigns[0]}}
	case sb.n == 1:
		m = &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_ReportAck{ReportAck: sb.acks[0]}}
	default:
		m = &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Batch{Batch: &agentv1.ServerBatch{ReportAcks: sb.acks, Assigns: sb.assigns}}}
	}
	*sb = serverBatcher{}
	return m
}

// sendQueued sends first and whatever else is queued on se.out right now, runs of
// assigns and report acks as batches when the agent takes them, in queue order
// otherwise. It returns send's first error.
func (se *session) sendQueued(first *agentv1.ServerMessage, send func(*agentv1.ServerMessage) error) error {
	if !se.batch {
		return send(first)
	}
	var sb serverBatcher
	flush := func() error {
		if m := sb.take(); m != nil {
			return send(m)
		}
		return nil
	}
	m := first
	for {
		if !sb.add(m) {
			if err := flush(); err != nil {
				return err
			}
			if !sb.add(m) { // not batchable: on its own, in order
				if err := send(m); err != nil {
					return err
				}
			}
		}
		select {
		case m = <-se.out:
		default:
			return flush()
		}
	}
}

// roundSends gathers the assignments of a dispatch round by session, so that an agent
// that takes batches gets those of one round as one ServerBatch (a few past its
// bounds), its sender woken once for them rather than once each; to other agents each
// goes on its own. The zero value is ready to use.
type roundSends struct {
	order []*session // in the order first given a message
	by    map[*session]*sessionSends
}

// sessionSends is what a round sends to one session.
type sessionSends struct {
	sb   serverBatcher
	msgs []*agentv1.ServerMessage // full batches, and every message to an agent without batches
}

// add queues m (an assign) for se.
func (r *roundSends) add(se *session, m *agentv1.ServerMessage) {
	ss := r.by[se]
	if ss == nil {
		if r.by == nil {
			r.by = map[*session]*sessionSends{}
		}
		ss = &sessionSends{}
		r.by[se] = ss
		r.order = append(r.order, se)
	}
	switch {
	case !se.batch:
		ss.msgs = append(ss.msgs, m)
	case !ss.sb.add(m):
		ss.msgs = append(ss.msgs, ss.sb.take())
		ss.sb.add(m)
	}
}

// send sends what was queued, each session's in order. Call it without s.agents.mu.
func (r *roundSends) send() {
	for _, se := range r.order {
		ss := r.by[se]
		if m := ss.sb.take(); m != nil {
			ss.msgs = append(ss.msgs, m)
		}
		for _, m := range ss.msgs {
			se.send(m)
		}
	}
}

// agentBatch applies an AgentBatch from a: its acks, then its reports, as the single
// messages would be.
func (s *Server) agentBatch(ctx context.Context, a *agent, se *session, pl *pipeline, b *agentv1.AgentBatch) error {
	if n := len(b.GetAcks()) + len(b.GetReports()); n > MaxAgentBatch {
		s.metrics.refused.WithLabelValues("limits").Inc()
		return fmt.Errorf("batch: %d acks and reports, over the limit of %d (sched.MaxAgentBatch)", n, MaxAgentBatch)
	}
	var tacks []*agentv1.Ack
	for _, ack := range b.GetAcks() {
		if strings.HasPrefix(ack.GetTaskId(), transientPrefix) {
			tacks = append(tacks, ack)
			continue
		}
		pl.run(ack.GetTaskId(), func() { s.ack(ctx, a, se, ack) })
	}
	if len(tacks) > 0 {
		s.ackTransients(a, tacks)
	}
	var treps []*agentv1.Report
	for _, r := range b.GetReports() {
		if strings.HasPrefix(r.GetTaskId(), transientPrefix) {
			treps = append(treps, r)
			continue
		}
		s.reportVia(ctx, a, se, pl, r)
	}
	if len(treps) > 0 {
		acks := s.reportTransients(a.id, treps)
		// The slots these reports freed are filled now rather than by the dispatcher's
		// next round: no wake and coalescing wait, and the assigns usually go out in one
		// ServerBatch with the acks (the sender takes what is queued). The tasks go to
		// whichever agents dispatchTransient picks, as in a round.
		s.sendTransients(time.Now())
		for _, ack := range acks {
			se.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_ReportAck{ReportAck: ack}})
		}
	}
	return nil
}

// reportVia applies report r of a stored task in a's pipeline and sends its ack once
// the result is committed.
func (s *Server) reportVia(ctx context.Context, a *agent, se *session, pl *pipeline, r *agentv1.Report) {
	pl.run(r.GetTaskId(), func() {
		ack := s.Report(ctx, a.id, r) // returns once the result is committed
		se.send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_ReportAck{ReportAck: ack}})
	})
}
