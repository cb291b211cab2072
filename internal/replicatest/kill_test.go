package replicatest

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/postgres/pgtest"
)

// TestKillReplica runs three `paddock server` replicas on one real PostgreSQL, nine
// agents spread over them (each given the three agent ports) and N tasks (2,000;
// PADDOCK_REPLICA_TASKS=10000 for the long run) submitted to the three in turn. Once
// a third of the tasks are done it kills the replica holding the most agents with
// SIGKILL. Then, judged by the store: every task is terminal and succeeded, none is
// lost and none was stored twice (the submits that failed on the dead replica were
// retried on another with the same idempotency key), and every task has exactly one
// succeeded attempt (no task completed twice). The killed replica's agents must
// reconnect to the others; the test reports how long they took.
func TestKillReplica(t *testing.T) {
	n := taskCount(t, 2000)
	pg := pgtest.Start(t)
	dsn := pg.NewDatabase(t)
	bin := paddockBin(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	rs := []*replica{startReplica(t, bin, dsn, "r1"), startReplica(t, bin, dsn, "r2"), startReplica(t, bin, dsn, "r3")}
	const agents = 9
	ex := &noop{runs: map[string]int{}}
	startAgents(t, rs, agents, 8, ex)
	where := waitAgents(t, rs, agents)
	t.Logf("agents by replica at start: %v", byReplica(where))

	submitCtx, stopSubmit := context.WithTimeout(ctx, 10*time.Minute)
	defer stopSubmit()
	type result struct {
		retried int64
		err     error
	}
	submitted := make(chan result, 1)
	start := time.Now()
	go func() {
		r, err := submitAll(submitCtx, rs, "t", n, 8)
		submitted <- result{r, err}
	}()

	waitTerminal(t, st, int64(n/3), 10*time.Minute)
	// The victim: the replica with the most agents now.
	where = waitAgents(t, rs, agents)
	br := byReplica(where)
	victim := rs[0]
	for _, r := range rs {
		if len(br[r.id]) > len(br[victim.id]) {
			victim = r
		}
	}
	moved := br[victim.id]
	c, _ := counts(ctx, st)
	killed := time.Now()
	victim.kill(t)
	t.Logf("killed replica %s (SIGKILL) holding agents %v, at %v into the run with %d tasks terminal: %v",
		victim.id, moved, killed.Sub(start).Round(time.Millisecond), terminal(c), c)

	// Its agents reconnect to the others.
	var survivors []*replica
	for _, r := range rs {
		if r != victim {
			survivors = append(survivors, r)
		}
	}
	var reconnected time.Duration
	for {
		on := map[string]bool{}
		for _, r := range survivors {
			got, _ := r.agentsOn(ctx)
			for id := range got {
				on[id] = true
			}
		}
		all := true
		for _, id := range moved {
			all = all && on[id]
		}
		if all {
			reconnected = time.Since(killed)
			break
		}
		if time.Since(killed) > 2*time.Minute { // a failure bound, not a speed target
			t.Fatalf("agents of the killed replica not all back after 2 minutes: connected to the others: %v; want %v", on, moved)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the %d agents of the killed replica were connected to the other replicas %v after the kill", len(moved), reconnected.Round(time.Millisecond))

	res := <-submitted
	if res.err != nil {
		t.Fatal(res.err)
	}
	waitTerminal(t, st, int64(n), 10*time.Minute)
	elapsed := time.Since(start)

	// Judge by the store.
	ts, err := allTasks(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != n {
		t.Fatalf("the store holds %d tasks, want %d (one per idempotency key: none lost, none stored twice)", len(ts), n)
	}
	byState := map[store.State]int{}
	retriedTasks, twice := 0, 0
	keys := map[string]bool{}
	for _, tk := range ts {
		byState[tk.State]++
		keys[tk.IdempotencyKey] = true
		if tk.State != store.Succeeded {
			full, _ := st.Get(ctx, tk.ID)
			t.Errorf("task %s (%s) is %s, want succeeded: %s", tk.ID, tk.IdempotencyKey, tk.State, full.Error)
			continue
		}
		atts, err := st.Attempts(ctx, tk.ID)
		if err != nil {
			t.Fatal(err)
		}
		won := 0
		for _, a := range atts {
			if a.State == store.Succeeded {
				won++
			}
		}
		if won != 1 {
			t.Errorf("task %s has %d succeeded attempts of %d; want exactly one (completed once)", tk.ID, won, len(atts))
			twice++
		}
		if len(atts) > 1 {
			retriedTasks++
		}
	}
	if len(keys) != n {
		t.Errorf("%d distinct idempotency keys among %d tasks; want %d", len(keys), len(ts), n)
	}
	ex.mu.Lock()
	ranTwice := 0
	for _, k := range ex.runs {
		if k > 1 {
			ranTwice++
		}
	}
	ex.mu.Unlock()
	t.Logf("%d tasks in %v (%.0f tasks/s with a replica killed): %v; %d submits retried on another replica; %d tasks took more than one attempt; %d handler runs repeated (at-least-once); %d tasks completed twice",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), byState, res.retried, retriedTasks, ranTwice, twice)
}

// byReplica inverts agent -> replica.
func byReplica(where map[string]string) map[string][]string {
	out := map[string][]string{}
	for a, r := range where {
		out[r] = append(out[r], a)
	}
	for _, as := range out {
		sort.Strings(as)
	}
	return out
}
