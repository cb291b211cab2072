package session

import (
	"errors"
	"fmt"
	"testing"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

func ackMsg(id string) *agentv1.AgentMessage {
	return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: &agentv1.Ack{TaskId: id}}}
}

func reportMsg(id string, out int) *agentv1.AgentMessage {
	return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: &agentv1.Report{TaskId: id, Output: make([]byte, out)}}}
}

// describe names what one sent message carries, in order: "a1" an ack, "r1" a report,
// "hb" a heartbeat, "[a1 r1]" a batch.
func describe(m *agentv1.AgentMessage) string {
	switch m := m.GetMsg().(type) {
	case *agentv1.AgentMessage_Ack:
		return "a" + m.Ack.GetTaskId()
	case *agentv1.AgentMessage_Report:
		return "r" + m.Report.GetTaskId()
	case *agentv1.AgentMessage_Heartbeat:
		return "hb"
	case *agentv1.AgentMessage_Batch:
		var parts []string
		for _, a := range m.Batch.GetAcks() {
			parts = append(parts, "a"+a.GetTaskId())
		}
		for _, r := range m.Batch.GetReports() {
			parts = append(parts, "r"+r.GetTaskId())
		}
		return fmt.Sprint(parts)
	}
	return "?"
}

// TestDrainBatches: what is queued goes out in order, runs of acks and reports as one
// batch each (a heartbeat between them splits them), a lone message as itself, and a
// batch never grows past its byte bound.
func TestDrainBatches(t *testing.T) {
	hb := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{}}}
	for _, tc := range []struct {
		name   string
		queued []*agentv1.AgentMessage
		want   []string
	}{
		{"lone ack", []*agentv1.AgentMessage{ackMsg("1")}, []string{"a1"}},
		{"acks and reports", []*agentv1.AgentMessage{ackMsg("1"), ackMsg("2"), reportMsg("1", 0), reportMsg("2", 0)}, []string{"[a1 a2 r1 r2]"}},
		{"split by a heartbeat", []*agentv1.AgentMessage{ackMsg("1"), reportMsg("1", 0), hb, reportMsg("2", 0), ackMsg("3")}, []string{"[a1 r1]", "hb", "[a3 r2]"}},
		{"byte bound", []*agentv1.AgentMessage{reportMsg("1", maxBatchBytes-100), reportMsg("2", 1000), reportMsg("3", 0)}, []string{"r1", "[r2 r3]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make(chan *agentv1.AgentMessage, len(tc.queued))
			for _, m := range tc.queued[1:] {
				out <- m
			}
			var got []string
			err := drain(tc.queued[0], out, func(m *agentv1.AgentMessage) error { got = append(got, describe(m)); return nil })
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("sent %v (err %v), want %v", got, err, tc.want)
			}
		})
	}
	t.Run("send error", func(t *testing.T) {
		out := make(chan *agentv1.AgentMessage, 1)
		out <- hb
		boom := errors.New("boom")
		if err := drain(ackMsg("1"), out, func(*agentv1.AgentMessage) error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the send error", err)
		}
	})
}
