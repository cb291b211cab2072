package session

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// blockExec runs every task until the test releases it (or its ctx ends).
type blockExec struct {
	mu   sync.Mutex
	done map[string]chan struct{}
}

func (b *blockExec) Types() []TaskType {
	return []TaskType{{Name: "loose", Version: "1"}, {Name: "tight", Version: "2"}}
}

func (b *blockExec) ch(id string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done[id] == nil {
		b.done[id] = make(chan struct{})
	}
	return b.done[id]
}

func (b *blockExec) Execute(ctx context.Context, t Task) Result {
	select {
	case <-b.ch(t.ID):
		return Result{Output: []byte("ok")}
	case <-ctx.Done():
		return Result{Error: "cancelled"}
	}
}

// newUnconnected returns a session of cfg (its Dial pointing nowhere) that the test
// drives by hand, and the channel its messages to the server go to.
func newUnconnected(t *testing.T, cfg Config, ex Executor) (*Session, chan *agentv1.AgentMessage) {
	t.Helper()
	cfg.Dial = TCPDialer("127.0.0.1:1")
	s, err := New(cfg, ex)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *agentv1.AgentMessage, 100)
	s.mu.Lock()
	s.out = out
	s.mu.Unlock()
	return s, out
}

// TestAllocatorGlue drives the session's allocator glue by hand with a fake clock:
// the server's QueueStatus feeds the allocator, each heartbeat ends a cycle and
// carries the new limits, assignments take slots (borrowing an idle one rather than
// refusing), and only a full agent refuses.
func TestAllocatorGlue(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	ex := &blockExec{done: map[string]chan struct{}{}}
	s, out := newUnconnected(t, Config{AgentID: "glue", TotalSlots: 4, Clock: clk,
		TolerableDelay: map[string]time.Duration{"tight": 100 * time.Millisecond}, DefaultTolerableDelay: time.Second}, ex)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.wg.Wait() }()

	limits := func(hb *agentv1.AgentMessage) map[string]int {
		t.Helper()
		got := map[string]int{}
		sum := 0
		for _, ty := range hb.GetHeartbeat().GetTypes() {
			got[ty.GetName()] = int(ty.GetSlots())
			sum += int(ty.GetSlots())
			if ty.GetSlots() < ty.GetMinSlots() || ty.GetMinSlots() < 1 {
				t.Fatalf("type %s: slots %d below its minimum %d", ty.GetName(), ty.GetSlots(), ty.GetMinSlots())
			}
		}
		if sum != 4 {
			t.Fatalf("heartbeat limits %v add up to %d, want the total 4", got, sum)
		}
		return got
	}
	assign := func(id, typ string) *agentv1.Ack {
		t.Helper()
		s.assign(ctx, &agentv1.Assign{TaskId: id, LeaseId: 1, Type: typ})
		for {
			select {
			case m := <-out:
				if a := m.GetAck(); a != nil && a.GetTaskId() == id {
					return a
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no ack for %s", id)
			}
		}
	}

	// The server reports both types 300ms behind with a backlog: 3x tight's tolerable
	// delay, 0.3x loose's. The next heartbeat carries tight 3, loose 1.
	s.observe(&agentv1.QueueStatus{Types: []*agentv1.TypeQueue{
		{Type: "loose", DelayMs: 300, Ready: 50}, {Type: "tight", DelayMs: 300, Ready: 50}, {Type: "unknown", DelayMs: 1}}})
	clk.Advance(100 * time.Millisecond)
	hb := s.heartbeat()
	if got := limits(hb); got["tight"] != 3 || got["loose"] != 1 {
		t.Fatalf("limits after a cycle with tight 3x over: %v, want tight 3, loose 1", got)
	}
	for _, ty := range hb.GetHeartbeat().GetTypes() {
		if ty.GetDelayMs() != 300 {
			t.Fatalf("type %s: delay used %dms, want the server's 300ms", ty.GetName(), ty.GetDelayMs())
		}
	}

	// The server dispatches against those limits: 3 tight and 1 loose all start.
	for _, id := range []string{"t1", "t2", "t3"} {
		if a := assign(id, "tight"); !a.GetAccepted() {
			t.Fatalf("%s refused: %s", id, a.GetError())
		}
	}
	if a := assign("l1", "loose"); !a.GetAccepted() {
		t.Fatalf("l1 refused: %s", a.GetError())
	}
	// A fifth task finds all 4 slots busy: refused, naming why.
	if a := assign("l2", "loose"); a.GetAccepted() || !strings.Contains(a.GetError(), "all slots are busy") {
		t.Fatalf("fifth task: accepted %v, error %q; want a refusal for a full agent", a.GetAccepted(), a.GetError())
	}
	if a := assign("x", "nope"); a.GetAccepted() || !strings.Contains(a.GetError(), `"nope"`) {
		t.Fatalf("unknown type: accepted %v, error %q", a.GetAccepted(), a.GetError())
	}
	// A tight task ends: its slot is free again. A loose task dispatched under a
	// limit the server had not yet updated borrows it instead of being refused.
	close(ex.ch("t1"))
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Running["tight"] != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("t1 never released its slot: %+v", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if a := assign("l3", "loose"); !a.GetAccepted() {
		t.Fatalf("l3 refused with an idle slot: %s", a.GetError())
	}
	st := s.Stats()
	if st.Running["loose"] != 2 || st.Running["tight"] != 2 || st.Alloc.InUse != 4 {
		t.Fatalf("stats %+v, want loose 2, tight 2 running, 4 in use", st)
	}

	// Now loose is far behind (5s = 5x its 1s) and tight within its tolerance: the
	// extra slots move to loose; tight keeps its minimum.
	s.observe(&agentv1.QueueStatus{Types: []*agentv1.TypeQueue{
		{Type: "loose", DelayMs: 5000, Ready: 50}, {Type: "tight", DelayMs: 10, Ready: 50}}})
	clk.Advance(100 * time.Millisecond)
	if got := limits(s.heartbeat()); got["loose"] != 3 || got["tight"] != 1 {
		t.Fatalf("limits after loose 5x over: %v, want loose 3, tight 1", got)
	}
	// A quiet cycle (no queue status: nothing waits): no type gets less than its
	// minimum and the limits still add up to the total.
	clk.Advance(100 * time.Millisecond)
	limits(s.heartbeat())
}

// stubbornExec runs every task until the test releases it, ignoring ctx: a handler
// whose teardown takes a while after a cancel.
type stubbornExec struct{ blockExec }

func (b *stubbornExec) Types() []TaskType { return []TaskType{{Name: "work", Version: "1"}} }

func (b *stubbornExec) Execute(ctx context.Context, t Task) Result {
	<-b.ch(t.ID)
	return Result{Error: "stopped late"}
}

// TestPreemptHandover: on an agent with one slot, a preempted task whose handler has
// not returned yet still holds the slot for an ordinary Assign, but an Assign that
// replaces it (Assign.replaces_task_id) takes the slot at once; the preempted run,
// when its handler finally returns, reports nothing and frees no second slot, so the
// overlap is one task and no more.
func TestPreemptHandover(t *testing.T) {
	ex := &stubbornExec{blockExec{done: map[string]chan struct{}{}}}
	s, out := newUnconnected(t, Config{AgentID: "handover", TotalSlots: 1}, ex)
	ctx, cancel := context.WithCancel(context.Background())
	released := map[string]bool{}
	release := func(id string) {
		if !released[id] {
			released[id] = true
			close(ex.ch(id))
		}
	}
	defer func() {
		cancel()
		release("batch")
		release("online")
		s.wg.Wait()
	}()
	ackOf := func(a *agentv1.Assign) *agentv1.Ack {
		t.Helper()
		s.assign(ctx, a)
		m := <-out
		if m.GetAck().GetTaskId() != a.GetTaskId() {
			t.Fatalf("assign %s: got %v, want its ack", a.GetTaskId(), m)
		}
		return m.GetAck()
	}
	if ack := ackOf(&agentv1.Assign{TaskId: "batch", LeaseId: 1, Type: "work"}); !ack.GetAccepted() {
		t.Fatalf("batch task refused: %s", ack.GetError())
	}
	s.cancelTask(&agentv1.Cancel{TaskId: "batch", LeaseId: 1, Kind: agentv1.CancelKind_CANCEL_KIND_PREEMPTED})
	// The handler has not returned: without a hand-over the slot is still taken.
	if ack := ackOf(&agentv1.Assign{TaskId: "other", LeaseId: 2, Type: "work"}); ack.GetAccepted() {
		t.Fatal("an ordinary assign took the slot of a preempted task still stopping")
	}
	if ack := ackOf(&agentv1.Assign{TaskId: "online", LeaseId: 3, Type: "work", ReplacesTaskId: "batch", ReplacesLeaseId: 1}); !ack.GetAccepted() {
		t.Fatalf("the assign replacing the preempted task was refused: %s", ack.GetError())
	}
	// A wrong lease names no run of this agent: it frees nothing.
	if ack := ackOf(&agentv1.Assign{TaskId: "other", LeaseId: 4, Type: "work", ReplacesTaskId: "batch", ReplacesLeaseId: 9}); ack.GetAccepted() {
		t.Fatal("an assign replacing an unknown lease took a slot")
	}
	release("batch") // the preempted handler returns at last
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		_, running := s.runs["batch"]
		_, reported := s.unacked["batch"]
		s.mu.Unlock()
		if reported {
			t.Fatal("the preempted task reported a result")
		}
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the preempted run never ended")
		}
	}
	if ack := ackOf(&agentv1.Assign{TaskId: "late", LeaseId: 5, Type: "work"}); ack.GetAccepted() {
		t.Fatal("the preempted run freed its slot a second time: two tasks run on a one-slot agent")
	}
	if st := s.Stats(); st.Running["work"] != 1 {
		t.Fatalf("running %v, want the online task alone", st.Running)
	}
}
