package session

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// gateExec runs tasks of type "q" (2 slots) until the test lets each one end, and
// records the order they started in and the most that ran at once.
type gateExec struct {
	mu       sync.Mutex
	running  int
	most     int
	started  []string
	deadline map[string]time.Time
	gate     map[string]chan struct{}
}

func (*gateExec) Types() []TaskType { return []TaskType{{Name: "q", Version: "1", Concurrency: 2}} }

func (e *gateExec) Execute(ctx context.Context, t Task) Result {
	e.mu.Lock()
	e.running++
	e.most = max(e.most, e.running)
	e.started = append(e.started, t.ID)
	e.deadline[t.ID] = t.Deadline
	g := e.gate[t.ID]
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running--
		e.mu.Unlock()
	}()
	select {
	case <-g:
		return Result{Output: []byte(t.ID)}
	case <-ctx.Done():
		return Result{Error: context.Cause(ctx).Error(), Kind: agentv1.FailureKind_FAILURE_KIND_CANCELLED}
	}
}

func (e *gateExec) startedList() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.started...)
}

// TestQueuedAheadTasks: tasks sent ahead (Assign.may_queue) beyond the type's free
// slots are acknowledged at once, wait without running (never more than the type's 2
// slots run), start in the order they came as slots free, get their timeout from their
// start, and one cancelled while it waits ends without running.
func TestQueuedAheadTasks(t *testing.T) {
	e := &gateExec{deadline: map[string]time.Time{}, gate: map[string]chan struct{}{}}
	ids := []string{"r0", "r1", "q0", "q1", "q2", "q3"}
	for _, id := range ids {
		e.gate[id] = make(chan struct{})
	}
	s, ctx := unconnected(t, "ahead", e)
	var as []*agentv1.Assign
	for _, id := range ids {
		as = append(as, &agentv1.Assign{TaskId: id, LeaseId: 1, Type: "q", LeaseSecret: "s", MayQueue: id[0] == 'q', TimeoutMs: 60_000,
			DeadlineUnixMs: time.Now().Add(10 * time.Minute).UnixMilli()}) // the latest a queued one may end
	}
	s.assignBatch(ctx, as)
	if acks := (<-s.out).GetBatch().GetAcks(); len(acks) != len(ids) {
		t.Fatalf("acks %v: want %d, all at once", acks, len(ids))
	} else {
		for _, a := range acks {
			if !a.GetAccepted() {
				t.Fatalf("ack %v: a task sent ahead is accepted", a)
			}
		}
	}
	// waitStarted waits until len(want) tasks started and checks them: the first two
	// (r0 and r1, started together) in any order, the others in order.
	waitStarted := func(want ...string) {
		t.Helper()
		for end := time.Now().Add(time.Minute); len(e.startedList()) < len(want); time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("started %v, want %v", e.startedList(), want)
			}
		}
		got := e.startedList()
		if len(got) >= 2 && got[0] == "r1" {
			got[0], got[1] = got[1], got[0]
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("started %v, want %v", e.startedList(), want)
		}
	}
	report := func() *agentv1.Report {
		t.Helper()
		select {
		case m := <-s.out:
			return m.GetReport()
		case <-time.After(time.Minute):
			t.Fatal("no report after a minute")
			return nil
		}
	}
	waitStarted("r0", "r1")
	time.Sleep(20 * time.Millisecond) // a queued task that wrongly started would show now
	waitStarted("r0", "r1")

	// A queued task cancelled by the server ends without running.
	s.cancelTask(&agentv1.Cancel{TaskId: "q1", LeaseId: 1, Kind: agentv1.CancelKind_CANCEL_KIND_CLIENT, Reason: "test"})
	if r := report(); r.GetTaskId() != "q1" || r.GetStatus() != agentv1.Status_STATUS_CANCELLED {
		t.Fatalf("report %v: want q1 cancelled", r)
	}

	close(e.gate["r0"]) // its slot goes to q0, the first queued
	if r := report(); r.GetTaskId() != "r0" || r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
		t.Fatalf("report %v: want r0 succeeded", r)
	}
	waitStarted("r0", "r1", "q0")
	close(e.gate["r1"])
	if r := report(); r.GetTaskId() != "r1" {
		t.Fatalf("report %v: want r1", r)
	}
	waitStarted("r0", "r1", "q0", "q2")
	close(e.gate["q0"])
	if r := report(); r.GetTaskId() != "q0" || r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
		t.Fatalf("report %v: want q0 succeeded", r)
	}
	waitStarted("r0", "r1", "q0", "q2", "q3")
	close(e.gate["q2"])
	close(e.gate["q3"])
	got := map[string]bool{}
	for len(got) < 2 {
		r := report()
		if r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED || got[r.GetTaskId()] {
			t.Fatalf("report %v (so far %v)", r, got)
		}
		got[r.GetTaskId()] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.most > 2 {
		t.Fatalf("%d tasks of type q ran at once; its limit is 2", e.most)
	}
	if d := time.Until(e.deadline["q3"]); d > time.Minute {
		t.Fatalf("q3's deadline is %v away: want its 60 s timeout counted from its start, not deadline_unix_ms", d)
	}
}
