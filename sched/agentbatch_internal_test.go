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
