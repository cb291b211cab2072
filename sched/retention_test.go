package sched_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// TestTaskRetention: finished tasks are deleted, through the real server and SQLite
// store, once their state's retention has passed since they finished; live tasks and
// states kept forever stay.
func TestTaskRetention(t *testing.T) {
	cfg := rawAgentConfig()
	cfg.TaskRetention = map[store.State]time.Duration{store.Cancelled: time.Hour, store.Dead: 0}
	ts := startServer(t, cfg)
	ctx := context.Background()
	var cancelled []string
	for range 3 {
		tk := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody-serves-this", Payload: []byte("x")})
		if _, err := ts.tasks.Cancel(ctx, connect.NewRequest(&paddockv1.CancelRequest{Id: tk.GetId()})); err != nil {
			t.Fatal(err)
		}
		cancelled = append(cancelled, tk.GetId())
	}
	queued := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody-serves-this", Payload: []byte("y")})

	if n, err := ts.srv.DeleteExpiredTasks(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("DeleteExpiredTasks now = %d, %v; want nothing deleted within the retention", n, err)
	}
	n, err := ts.srv.DeleteExpiredTasks(ctx, time.Now().Add(61*time.Minute))
	if err != nil || n != len(cancelled) {
		t.Fatalf("DeleteExpiredTasks an hour later = %d, %v; want the %d cancelled tasks", n, err, len(cancelled))
	}
	for _, id := range cancelled {
		_, err := ts.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("Get of deleted task %s: %v, want not found", id, err)
		}
	}
	if _, err := ts.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: queued.GetId()})); err != nil {
		t.Errorf("the queued task was deleted: %v", err)
	}
}

func TestTaskRetentionBadConfig(t *testing.T) {
	for _, tc := range []struct {
		ret  map[store.State]time.Duration
		want string
	}{
		{map[store.State]time.Duration{store.Queued: time.Hour}, "server.task_retention.queued"},
		{map[store.State]time.Duration{store.Succeeded: -time.Hour}, "server.task_retention.succeeded"},
	} {
		cfg := fastConfig()
		cfg.TaskRetention = tc.ret
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate with retention %v = %v; want an error naming %s", tc.ret, err, tc.want)
		}
	}
}
