package sched

import (
	"fmt"
	"testing"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// TestSendQueuedBatches: to an agent that takes batches, the assigns and report acks
// queued at once go as one ServerBatch (a cancel between them splits them, and keeps
// its place); to one that does not, every message goes as itself.
func TestSendQueuedBatches(t *testing.T) {
	assign := func(id string) *agentv1.ServerMessage {
		return &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: &agentv1.Assign{TaskId: id}}}
	}
	rack := func(id string) *agentv1.ServerMessage {
		return &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_ReportAck{ReportAck: &agentv1.ReportAck{TaskId: id}}}
	}
	cancel := &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Cancel{Cancel: &agentv1.Cancel{TaskId: "c"}}}
	describe := func(m *agentv1.ServerMessage) string {
		switch m := m.GetMsg().(type) {
		case *agentv1.ServerMessage_Assign:
			return "as" + m.Assign.GetTaskId()
		case *agentv1.ServerMessage_ReportAck:
			return "ra" + m.ReportAck.GetTaskId()
		case *agentv1.ServerMessage_Cancel:
			return "cancel"
		case *agentv1.ServerMessage_Batch:
			var p []string
			for _, r := range m.Batch.GetReportAcks() {
				p = append(p, "ra"+r.GetTaskId())
			}
			for _, a := range m.Batch.GetAssigns() {
				p = append(p, "as"+a.GetTaskId())
			}
			return fmt.Sprint(p)
		}
		return "?"
	}
	queued := []*agentv1.ServerMessage{rack("1"), assign("2"), assign("3"), cancel, assign("4")}
	for _, tc := range []struct {
		batch bool
		want  string
	}{
		{true, "[[ra1 as2 as3] cancel as4]"},
		{false, "[ra1 as2 as3 cancel as4]"},
	} {
		se := &session{out: make(chan *agentv1.ServerMessage, len(queued)), batch: tc.batch}
		for _, m := range queued {
			se.out <- m
		}
		var got []string
		for len(se.out) > 0 {
			if err := se.sendQueued(<-se.out, func(m *agentv1.ServerMessage) error { got = append(got, describe(m)); return nil }); err != nil {
				t.Fatal(err)
			}
		}
		if fmt.Sprint(got) != tc.want {
			t.Fatalf("batch %v: sent %v, want %v", tc.batch, got, tc.want)
		}
	}
}

// TestRoundSends: a dispatch round's assigns go to an agent that takes batches as one
// ServerBatch (split only past maxServerBatchItems), in order; to one that does not,
// each on its own.
func TestRoundSends(t *testing.T) {
	ctx := t.Context()
	batched := &session{batch: true, out: make(chan *agentv1.ServerMessage, 16), ctx: ctx}
	plain := &session{out: make(chan *agentv1.ServerMessage, 16), ctx: ctx}
	big := &session{batch: true, out: make(chan *agentv1.ServerMessage, 16), ctx: ctx}
	assign := func(id string) *agentv1.ServerMessage {
		return &agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: &agentv1.Assign{TaskId: id}}}
	}
	var r roundSends
	for i := range 3 {
		r.add(batched, assign(fmt.Sprint("b", i)))
		r.add(plain, assign(fmt.Sprint("p", i)))
	}
	for i := range maxServerBatchItems + 1 {
		r.add(big, assign(fmt.Sprint(i)))
	}
	r.send()
	if n := len(batched.out); n != 1 {
		t.Fatalf("3 assigns to a batching agent went as %d messages, want 1", n)
	}
	var ids []string
	for _, a := range (<-batched.out).GetBatch().GetAssigns() {
		ids = append(ids, a.GetTaskId())
	}
	if fmt.Sprint(ids) != "[b0 b1 b2]" {
		t.Fatalf("the batch holds %v, want [b0 b1 b2]", ids)
	}
	if n := len(plain.out); n != 3 {
		t.Fatalf("3 assigns to an agent without batches went as %d messages, want 3", n)
	}
	for i := range 3 {
		if got := (<-plain.out).GetAssign().GetTaskId(); got != fmt.Sprint("p", i) {
			t.Fatalf("assign %d to the agent without batches: %s, want p%d", i, got, i)
		}
	}
	if n := len(big.out); n != 2 {
		t.Fatalf("%d assigns went as %d messages, want 2 (one full batch, then one)", maxServerBatchItems+1, n)
	}
	if n := len((<-big.out).GetBatch().GetAssigns()); n != maxServerBatchItems {
		t.Fatalf("the first batch holds %d assigns, want %d", n, maxServerBatchItems)
	}
	if got := (<-big.out).GetAssign().GetTaskId(); got != fmt.Sprint(maxServerBatchItems) {
		t.Fatalf("the last assign: %s, want %d", got, maxServerBatchItems)
	}
}
