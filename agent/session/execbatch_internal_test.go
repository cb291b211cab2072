package session

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// batchExec serves "echo" and "other"; it records the size of each ExecuteBatch call
// and the tasks run alone. Payload "fail" fails; payload "wait" waits for its ctx.
type batchExec struct {
	mu      sync.Mutex
	batches []int
	alone   []string
}

func (*batchExec) Types() []TaskType {
	return []TaskType{{Name: "echo", Version: "1", Concurrency: 8}, {Name: "other", Version: "1"}}
}

func (e *batchExec) Execute(ctx context.Context, t Task) Result {
	e.mu.Lock()
	e.alone = append(e.alone, t.ID)
	e.mu.Unlock()
	return run1(ctx, t)
}

func (e *batchExec) ExecuteBatch(_ context.Context, calls []BatchCall, done func(int, Result)) {
	e.mu.Lock()
	e.batches = append(e.batches, len(calls))
	e.mu.Unlock()
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done(i, run1(c.Ctx, c.Task))
		}()
	}
	wg.Wait()
}

func run1(ctx context.Context, t Task) Result {
	switch string(t.Payload) {
	case "fail":
		return Result{Error: "failed as asked", Kind: agentv1.FailureKind_FAILURE_KIND_HANDLER_ERROR}
	case "wait":
		<-ctx.Done()
		return Result{Error: "cancelled", Kind: agentv1.FailureKind_FAILURE_KIND_CANCELLED}
	}
	return Result{Output: t.Payload}
}

// TestReadyTasksRunInBatches: the assigns of one ServerBatch run as one ExecuteBatch
// call per type and per maxExecBatch tasks; a type with one task runs alone; each
// task reports once with its own outcome, and a server cancel reaches its task alone.
func TestReadyTasksRunInBatches(t *testing.T) {
	ex := &batchExec{}
	s, err := New(Config{AgentID: "batch", Dial: TCPDialer("127.0.0.1:1"), DataDir: t.TempDir(), TotalSlots: 200}, ex)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	s.out, s.outCancel = make(chan *agentv1.AgentMessage, 256), cancel
	var as []*agentv1.Assign
	n := maxExecBatch + 6
	for i := range n {
		p := fmt.Sprint("p", i)
		switch i {
		case 3:
			p = "fail"
		case 5:
			p = "wait"
		}
		as = append(as, &agentv1.Assign{TaskId: fmt.Sprint("t", i), LeaseId: 1, Type: "echo", Payload: []byte(p), LeaseSecret: "s"})
	}
	as = append(as, &agentv1.Assign{TaskId: "o", LeaseId: 1, Type: "other", Payload: []byte("alone"), LeaseSecret: "s"})
	s.assignBatch(ctx, as)
	s.cancelTask(&agentv1.Cancel{TaskId: "t5", LeaseId: 1, Kind: agentv1.CancelKind_CANCEL_KIND_CLIENT, Reason: "test"})

	reports := map[string]*agentv1.Report{}
	for len(reports) < len(as) {
		select {
		case m := <-s.out:
			var rs []*agentv1.Report
			if r := m.GetReport(); r != nil {
				rs = append(rs, r)
			}
			rs = append(rs, m.GetBatch().GetReports()...)
			for _, r := range rs {
				if _, dup := reports[r.GetTaskId()]; dup {
					t.Fatalf("task %s reported twice", r.GetTaskId())
				}
				reports[r.GetTaskId()] = r
			}
		case <-time.After(time.Minute):
			t.Fatalf("%d reports after a minute, want %d", len(reports), len(as))
		}
	}
	for i := range n {
		r := reports[fmt.Sprint("t", i)]
		switch i {
		case 3:
			if r.GetStatus() != agentv1.Status_STATUS_FAILED || r.GetError() != "failed as asked" {
				t.Errorf("t3: %v, want failed", r)
			}
		case 5:
			if r.GetStatus() != agentv1.Status_STATUS_CANCELLED {
				t.Errorf("t5: %v, want cancelled", r)
			}
		default:
			if r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED || string(r.GetOutput()) != fmt.Sprint("p", i) {
				t.Errorf("t%d: %v, want succeeded with p%d", i, r, i)
			}
		}
	}
	if r := reports["o"]; string(r.GetOutput()) != "alone" {
		t.Errorf("o: %v", r)
	}
	ex.mu.Lock()
	defer ex.mu.Unlock()
	slices.Sort(ex.batches)
	if !slices.Equal(ex.batches, []int{6, maxExecBatch}) || !slices.Equal(ex.alone, []string{"o"}) {
		t.Errorf("ExecuteBatch calls of %v tasks and %v alone; want [6 %d] and [o]", ex.batches, ex.alone, maxExecBatch)
	}
	if st := s.Stats(); st.Running["echo"] != 0 || st.Running["other"] != 0 {
		t.Errorf("after every report: running %v, want none (slots released)", st.Running)
	}
}
