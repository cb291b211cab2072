package sched_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

// TestReplicas runs two in-process servers (replicas A and B) on one real PostgreSQL
// and one agent connected to B only. A task submitted on A runs on B's agent; a
// cancel requested on A reaches the handler on B's agent; a lease that another
// replica ends (as A's lease sweeper does) frees the agent's slot on B and stops the
// handler. Twice: with LISTEN/NOTIFY wake-ups and a sync interval too long to matter
// (the cancel must come through NOTIFY), and without NOTIFY (through B's sync poll;
// A's Wait sees the task finish on B by re-reading it).
func TestReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	for _, tc := range []struct {
		name   string
		notify bool
		sync   time.Duration
	}{
		{"notify", true, 10 * time.Minute},
		{"poll", false, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pg.NewDatabase(t)
			replica := func(id string) *testServer {
				st, err := postgres.Open(context.Background(), dsn, postgres.Options{Notify: tc.notify})
				if err != nil {
					t.Fatal(err)
				}
				cfg := fastConfig()
				cfg.LeaseTTL, cfg.ReplicaID, cfg.SyncInterval = 10*time.Second, id, tc.sync
				return startServerOn(t, cfg, st)
			}
			a, b := replica("ra"), replica("rb")
			st, err := postgres.Open(context.Background(), dsn, postgres.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()

			started := make(chan string, 4)
			stopped := make(chan string, 4)
			ex := &fakeExec{types: []session.TaskType{{Name: "echo", Version: "1"}, {Name: "block", Version: "1"}},
				fn: func(ctx context.Context, tk session.Task) session.Result {
					if tk.Type == "echo" {
						return echo(ctx, tk)
					}
					started <- tk.ID
					<-ctx.Done()
					stopped <- tk.ID
					return session.Result{Error: "stopped: " + ctx.Err().Error(), Retryable: true}
				}}
			startAgent(t, b, "ag1", ex)
			waitOn := b // without a poll, only the replica that ends a task wakes its waiters at once
			if !tc.notify {
				waitOn = a
			}
			const failAfter = time.Minute // failure bounds, not speed targets

			// Submitted on A, run by B's agent.
			id := submit(t, a, &paddockv1.TaskSpec{Type: "echo", Payload: []byte("hi")}).GetId()
			if tk := wait(t, waitOn, id, failAfter); tk.GetState() != paddockv1.State_STATE_SUCCEEDED || string(tk.GetOutput()) != "hi" {
				t.Fatalf("echo submitted on A = %v; want it succeeded on B's agent", tk)
			}
			r, err := b.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
			if err != nil || len(r.Msg.GetAgents()) != 1 || r.Msg.GetAgents()[0].GetReplica() != "rb" {
				t.Fatalf("B's agents = %v, %v; want ag1 held by replica rb", r.Msg.GetAgents(), err)
			}

			// Cancelled on A, stopped on B's agent.
			id = submit(t, a, &paddockv1.TaskSpec{Type: "block"}).GetId()
			expect(t, started, id, "start on B's agent")
			if _, err := a.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: id})); err != nil {
				t.Fatal(err)
			}
			expect(t, stopped, id, "stop after a cancel on A")
			if tk := wait(t, waitOn, id, failAfter); tk.GetState() != paddockv1.State_STATE_CANCELLED {
				t.Fatalf("task cancelled on A = %v, want CANCELLED", tk)
			}

			// A lease ended by another replica: B frees the slot and stops the handler.
			id = submit(t, a, &paddockv1.TaskSpec{Type: "block", MaxAttempts: 1}).GetId()
			expect(t, started, id, "start on B's agent")
			tk, err := st.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			msg := "lease expired (ended by the test, as another replica's sweeper would)"
			if _, err := st.Update(context.Background(), store.Update{TaskID: id, From: []store.State{store.Leased, store.Running}, LeaseID: tk.LeaseID,
				To: store.Dead, Now: time.Now(), Error: &msg, EndAttempt: true, Retryable: true}); err != nil {
				t.Fatal(err)
			}
			if tc.notify {
				return // B syncs only every 10 minutes here
			}
			expect(t, stopped, id, "stop after another replica ended its lease")
			deadline := time.Now().Add(failAfter)
			for {
				r, err := b.cluster.ListAgents(context.Background(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
				if err != nil {
					t.Fatal(err)
				}
				if r.Msg.GetAgents()[0].GetRunning() == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("B still counts %d tasks running on ag1 after its lease ended elsewhere", r.Msg.GetAgents()[0].GetRunning())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// expect waits for id on ch, failing after a minute with what.
func expect(t *testing.T, ch <-chan string, id, what string) {
	t.Helper()
	for {
		select {
		case got := <-ch:
			if got == id {
				return
			}
		case <-time.After(time.Minute):
			t.Fatalf("task %s: no %s within a minute", id, what)
		}
	}
}
