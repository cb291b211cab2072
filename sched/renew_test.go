package sched_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// countRenew is a store that counts the leases each Renew is asked to renew.
type countRenew struct {
	store.Store
	leases atomic.Int64
}

func (c *countRenew) Renew(ctx context.Context, agentID string, leases []store.LeaseRef, expires time.Time) (int, error) {
	c.leases.Add(int64(len(leases)))
	return c.Store.Renew(ctx, agentID, leases, expires)
}

// TestRenewOnlyWhenHalfTheLeaseIsLeft: a task running for three lease TTLs keeps its
// lease (one attempt, no expiry), while heartbeats write a renewal only when half the
// TTL is left: about twice per TTL, not on each of the ten heartbeats per TTL.
func TestRenewOnlyWhenHalfTheLeaseIsLeft(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "paddock.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cs := &countRenew{Store: st}
	cfg := fastConfig() // heartbeat 100 ms, lease TTL 1 s
	ts := startServerOn(t, cfg, cs)
	startAgent(t, ts, "a1", &fakeExec{types: []session.TaskType{{Name: "slow"}}, fn: func(ctx context.Context, tk session.Task) session.Result {
		select {
		case <-time.After(3 * cfg.LeaseTTL):
		case <-ctx.Done():
		}
		return session.Result{Output: []byte("done")}
	}})
	id := submit(t, ts, &paddockv1.TaskSpec{Type: "slow", MaxAttempts: 1}).GetId()
	got := wait(t, ts, id, time.Minute)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || got.GetAttempt() != 1 {
		t.Fatalf("task ended %v after %d attempts (%s); want succeeded in 1: its lease must be kept", got.GetState(), got.GetAttempt(), got.GetError())
	}
	// 3 TTLs at one renewal per half TTL is about 6; every heartbeat would be about 30.
	if n := cs.leases.Load(); n == 0 || n > 15 {
		t.Fatalf("%d lease renewals for a task running 3 lease TTLs with 10 heartbeats per TTL; want about 6 (1..15)", n)
	}
	t.Logf("%d renewals in 3 lease TTLs", cs.leases.Load())
}
