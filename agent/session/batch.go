package session

import (
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// Batching (agentv1.CapBatch): when the server takes AgentBatch messages, the sender
// sends the acks and reports it finds queued together as one message, and the server
// may send its assigns and report acks the same way (ServerBatch). Nothing waits to fill
// a batch: a batch is what was already queued when the sender got to it, so a lone
// message goes out at once and a burst costs one message instead of one each.

// Bounds of one AgentBatch: items, and bytes (proto size) beyond its first item, kept
// well under the server's message limit.
const (
	maxBatchItems = 256
	maxBatchBytes = 512 << 10
)

// batcher coalesces the acks and reports of a send queue into AgentBatch messages.
type batcher struct {
	acks    []*agentv1.Ack
	reports []*agentv1.Report
	bytes   int
}

// add adds m to the batch and reports whether it took it: only acks and reports, and
// only while the batch has room.
func (b *batcher) add(m *agentv1.AgentMessage) bool {
	n := len(b.acks) + len(b.reports)
	if n >= maxBatchItems {
		return false
	}
	switch m := m.GetMsg().(type) {
	case *agentv1.AgentMessage_Ack:
		b.acks = append(b.acks, m.Ack)
		return true
	case *agentv1.AgentMessage_Report:
		sz := proto.Size(m.Report)
		if n > 0 && b.bytes+sz > maxBatchBytes {
			return false
		}
		b.bytes += sz
		b.reports = append(b.reports, m.Report)
		return true
	}
	return false
}

// take returns the batch as one message (nil when empty; the message itself when it
// holds one item) and empties it.
func (b *batcher) take() *agentv1.AgentMessage {
	var m *agentv1.AgentMessage
	switch {
	case len(b.acks)+len(b.reports) == 0:
		return nil
	case len(b.acks) == 1 && len(b.reports) == 0:
		m = &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: b.acks[0]}}
	case len(b.acks) == 0 && len(b.reports) == 1:
		m = &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: b.reports[0]}}
	default:
		m = &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Batch{Batch: &agentv1.AgentBatch{Acks: b.acks, Reports: b.reports}}}
	}
	*b = batcher{}
	return m
}

// drain sends first and whatever else is queued on out right now, coalescing runs of
// acks and reports into batches, in queue order otherwise. It returns send's first
// error.
func drain(first *agentv1.AgentMessage, out <-chan *agentv1.AgentMessage, send func(*agentv1.AgentMessage) error) error {
	var b batcher
	flush := func() error {
		if m := b.take(); m != nil {
			return send(m)
		}
		return nil
	}
	m := first
	for {
		if !b.add(m) {
			if err := flush(); err != nil {
				return err
			}
			if !b.add(m) { // not batchable: on its own, in order
				if err := send(m); err != nil {
					return err
				}
			}
		}
		select {
		case m = <-out:
		default:
			return flush()
		}
	}
}
