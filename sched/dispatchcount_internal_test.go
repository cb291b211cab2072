package sched

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// TestDispatchCountsTransientTasks: the transient tasks a round sends take their number
// of the type's free slots, not the number of messages that carried them (a ServerBatch
// carries several). An agent with 4 free slots, 3 transient tasks and 4 stored ones
// queued: one round leases the 3 transient tasks and 1 stored task, reading the store
// for the 1 slot left, without passing over tasks it read (which would widen the
// type's next reads and start another round at once).
func TestDispatchCountsTransientTasks(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{Dev: true, LeaseTTL: time.Minute}, st)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *agentv1.ServerMessage, 64)
	a := testAgent("a1", func(a *agent) { a.sess = &session{batch: true, out: out, ctx: ctx} })
	s.agents.mu.Lock()
	s.agents.add(a)
	s.agents.mu.Unlock()

	now := time.Now()
	var ts []store.Task
	for i := range 4 {
		ts = append(ts, store.Task{ID: fmt.Sprintf("t%d", i), Type: "echo", Payload: []byte("x"), Class: store.Batch,
			MaxAttempts: 3, Tenant: "default", CreatedAt: now})
	}
	if _, _, err := st.CreateBatch(ctx, ts); err != nil {
		t.Fatal(err)
	}
	run := &streamRun{id: "st", typ: "echo", transient: true, tmpl: store.Task{Type: "echo", MaxAttempts: 3, Tenant: "default"}}
	s.trans.push(s, run, []uint64{0, 1, 2}, [][]byte{nil, nil, nil})

	n, err := s.dispatchOnce(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("one round with 4 free slots, 3 transient and 4 stored tasks queued leased %d tasks, want 4", n)
	}
	transient, stored := 0, 0
	for len(out) > 0 {
		m := <-out
		as := m.GetBatch().GetAssigns()
		if m.GetAssign() != nil {
			as = []*agentv1.Assign{m.GetAssign()}
		}
		for _, asg := range as {
			if strings.HasPrefix(asg.GetTaskId(), transientPrefix) {
				transient++
			} else {
				stored++
			}
		}
	}
	if transient != 3 || stored != 1 {
		t.Fatalf("assigns sent: %d transient, %d stored; want 3 and 1", transient, stored)
	}
	s.agents.mu.Lock()
	scan := s.agents.scan["echo"]
	s.agents.mu.Unlock()
	if scan != 0 {
		t.Fatalf("the round passed over stored tasks it read (the type's next reads widened to %d): it read more than the slot left", scan)
	}
}
