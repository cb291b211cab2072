package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// echoExec echoes the payload of tasks of type "echo".
type echoExec struct{}

func (echoExec) Types() []TaskType { return []TaskType{{Name: "echo", Version: "1", Concurrency: 8}} }
func (echoExec) Execute(_ context.Context, t Task) Result {
	return Result{Output: t.Payload}
}

// unconnected is a session of agent id over ex that is not connected: what it would
// send is in s.out (64 messages at most); ctx ends with the test.
func unconnected(t *testing.T, id string, ex Executor) (*Session, context.Context) {
	t.Helper()
	s, err := New(Config{AgentID: id, Dial: TCPDialer("127.0.0.1:1"), DataDir: t.TempDir()}, ex)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	s.out, s.outCancel = make(chan *agentv1.AgentMessage, 64), cancel
	return s, ctx
}

// TestAssignBatchAcksAtOnce: the assigns of one ServerBatch are acknowledged as one
// AgentBatch, queued before any of their reports; one of an unknown type is refused in
// it; every accepted task then reports once.
func TestAssignBatchAcksAtOnce(t *testing.T) {
	s, ctx := unconnected(t, "batch", echoExec{})
	var as []*agentv1.Assign
	for i := range 5 {
		as = append(as, &agentv1.Assign{TaskId: fmt.Sprint("t", i), LeaseId: 1, Type: "echo", Payload: []byte(fmt.Sprint("p", i)), LeaseSecret: "s"})
	}
	as = append(as, &agentv1.Assign{TaskId: "bad", LeaseId: 1, Type: "nosuch"})
	s.assignBatch(ctx, as)

	first := <-s.out
	acks := first.GetBatch().GetAcks()
	if len(acks) != len(as) || len(first.GetBatch().GetReports()) != 0 {
		t.Fatalf("first message %v: want one AgentBatch of %d acks", first, len(as))
	}
	for i, ack := range acks {
		want := i < 5
		if ack.GetTaskId() != as[i].GetTaskId() || ack.GetAccepted() != want {
			t.Fatalf("ack %d: %v, want task %s accepted %v", i, ack, as[i].GetTaskId(), want)
		}
	}
	if acks[5].GetError() == "" {
		t.Fatal("the refused assignment's ack says no why")
	}
	got := map[string]string{}
	for len(got) < 5 {
		select {
		case m := <-s.out:
			r := m.GetReport()
			if r == nil {
				t.Fatalf("after the acks: %v, want reports", m)
			}
			if _, dup := got[r.GetTaskId()]; dup {
				t.Fatalf("task %s reported twice", r.GetTaskId())
			}
			got[r.GetTaskId()] = string(r.GetOutput())
		case <-time.After(time.Minute):
			t.Fatalf("reports after a minute: %v", got)
		}
	}
	for i := range 5 {
		if got[fmt.Sprint("t", i)] != fmt.Sprint("p", i) {
			t.Fatalf("reports %v", got)
		}
	}
}
