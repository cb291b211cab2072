package sched_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// TestServerStallIsNotAgentSilence: when the server itself stalls for longer than the
// agent timeout (here its registry held for 4 agent timeouts), the agents whose messages
// waited meanwhile are not declared silent: their sessions survive the stall.
func TestServerStallIsNotAgentSilence(t *testing.T) {
	cfg := fastConfig() // heartbeat 100 ms, agent timeout 500 ms
	ts := startServer(t, cfg)
	startAgent(t, ts, "steady", &fakeExec{types: []session.TaskType{{Name: "echo"}}, fn: echo})
	before := agentConnectedAt(t, ts, "steady")
	time.Sleep(300 * time.Millisecond) // a few heartbeats in the ordinary way
	ts.srv.HoldRegistry(4 * 500 * time.Millisecond)
	time.Sleep(300 * time.Millisecond) // the sweep after the stall, and heartbeats again
	if after := agentConnectedAt(t, ts, "steady"); after != before {
		t.Fatalf("the agent's session was closed by the server's own stall (connected at %d, then at %d)", before, after)
	}
}

// slowRenew is a store whose lease renewals take renewDelay while slow is set: a store
// busy with a long write.
type slowRenew struct {
	store.Store
	slow  atomic.Bool
	delay time.Duration
}

func (s *slowRenew) Renew(ctx context.Context, agentID string, leases []store.LeaseRef, expires time.Time) (int, error) {
	if s.slow.Load() {
		time.Sleep(s.delay)
	}
	return s.Store.Renew(ctx, agentID, leases, expires)
}

// TestSlowStoreIsNotAgentSilence: lease renewals that take longer than the agent
// timeout (a store busy with other writes) do not stop the server reading the agent's
// messages, so a live agent is not declared silent and its session survives.
func TestSlowStoreIsNotAgentSilence(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowRenew{Store: st, delay: 4 * 500 * time.Millisecond}
	ts := startServerOn(t, fastConfig(), slow) // heartbeat 100 ms, agent timeout 500 ms
	startAgent(t, ts, "steady", &fakeExec{types: []session.TaskType{{Name: "echo"}}, fn: echo})
	before := agentConnectedAt(t, ts, "steady")
	slow.slow.Store(true)
	time.Sleep(3 * time.Second) // several renewals of 2 s each, in a row
	slow.slow.Store(false)
	time.Sleep(2500 * time.Millisecond) // the renewals still queued drain
	if after := agentConnectedAt(t, ts, "steady"); after != before {
		t.Fatalf("the agent's session was closed while the store was slow (connected at %d, then at %d)", before, after)
	}
}

// agentConnectedAt waits until agent id is connected and returns when its session started.
func agentConnectedAt(t *testing.T, ts *testServer, id string) int64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := ts.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range r.Msg.GetAgents() {
			if a.GetId() == id && a.GetState() == "connected" {
				return a.GetConnectedAtUnixMs()
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s never connected", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
