package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// Run runs the contract suite; open returns a new, empty store (closed by Run).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateGet", testCreateGet},
		{"Idempotency", testIdempotency},
		{"ReadyOrder", testReadyOrder},
		{"ReadyStats", testReadyStats},
		{"LeaseFencing", testLeaseFencing},
		{"UpdateCAS", testUpdateCAS},
		{"LateStart", testLateStart},
		{"RenewExpire", testRenewExpire},
		{"ListFilters", testListFilters},
		{"Counts", testCounts},
		{"IllegalUpdate", testIllegalUpdate},
		{"BlobRefs", testBlobRefs},
		{"BlobInUse", testBlobInUse},
		{"TouchBlobs", testTouchBlobs},
		{"LeaseSecret", testLeaseSecret},
		{"DeleteFinished", testDeleteFinished},
		{"CreateBatch", testCreateBatch},
		{"FailureKind", testFailureKind},
		{"Preemptions", testPreemptions},
		{"UpdateLease", testUpdateLease},
		{"UpdateLeaseRace", testUpdateLeaseRace},
		{"CreateLease", testCreateLease},
		{"Logs", testLogs},
		{"LogsDeleted", testLogsDeleted},
		{"AppendLog", testAppendLog},
		{"ScheduleExpired", testScheduleExpired},
		{"Waiting", testWaiting},
		{"Tokens", testTokens},
		{"TenantQueues", testTenantQueues},
		{"Usage", testUsage},
		{"BlobGrants", testBlobGrants},
		{"TenantBlobBytes", testTenantBlobBytes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

var t0 = time.UnixMilli(1_800_000_000_000)

// NewTask returns a valid task to create.
func NewTask(id, typ string) store.Task {
	return store.Task{ID: id, Type: typ, Payload: []byte("p-" + id), Class: store.Batch, MaxAttempts: 3,
		Tenant: "default", CreatedAt: t0}
}

func mustCreate(t *testing.T, s store.Store, tk store.Task) store.Task {
	t.Helper()
	got, created, err := s.Create(context.Background(), tk)
	if err != nil || !created {
		t.Fatalf("Create(%s) = created %v, %v", tk.ID, created, err)
	}
	return got
}

func testCreateGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	in := NewTask("a", "echo")
	in.Inputs = map[string][]byte{"x": {1, 2, 3}}
	in.Priority, in.Class, in.Timeout = 7, store.Online, 1500*time.Millisecond
	in.Requirements = store.Requirements{CPUMillis: 500, MemoryBytes: 1 << 20, Labels: map[string]string{"pool": "gpu"}}
	mustCreate(t, s, in)
	got, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.Queued || string(got.Payload) != "p-a" || string(got.Inputs["x"]) != "\x01\x02\x03" ||
		got.Priority != 7 || got.Class != store.Online || got.Timeout != 1500*time.Millisecond ||
		got.Requirements.Labels["pool"] != "gpu" || got.Requirements.CPUMillis != 500 || !got.CreatedAt.Equal(t0) {
		t.Fatalf("Get returned %+v", got)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(nope) error = %v, want ErrNotFound", err)
	}
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := NewTask("a", "echo")
	a.IdempotencyKey = "k1"
	mustCreate(t, s, a)
	b := NewTask("b", "echo")
	b.IdempotencyKey = "k1"
	got, created, err := s.Create(ctx, b)
	if err != nil || created || got.ID != "a" {
		t.Fatalf("second Create with the same key = %s created %v err %v, want task a, not created", got.ID, created, err)
	}
	c := NewTask("c", "echo")
	c.IdempotencyKey, c.Tenant = "k1", "other"
	if got := mustCreate(t, s, c); got.ID != "c" {
		t.Fatalf("same key in another tenant gave %s", got.ID)
	}
	// No key: always new.
	mustCreate(t, s, NewTask("d", "echo"))
	mustCreate(t, s, NewTask("e", "echo"))
}

func testReadyOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i, p := range []int{0, 5, 0, 5, -1} {
		tk := NewTask(fmt.Sprintf("t%d", i), "echo")
		tk.Priority = p
		mustCreate(t, s, tk)
	}
	later := NewTask("later", "echo")
	later.Priority, later.NotBefore = 100, t0.Add(time.Minute)
	mustCreate(t, s, later)
	mustCreate(t, s, NewTask("other", "sleep"))
	got, err := s.Ready(ctx, "echo", t0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tk := range got {
		ids = append(ids, tk.ID)
	}
	if fmt.Sprint(ids) != "[t1 t3 t0 t2 t4]" {
		t.Fatalf("Ready order = %v, want [t1 t3 t0 t2 t4] (priority, then FIFO; not_before respected)", ids)
	}
	got, _ = s.Ready(ctx, "echo", t0.Add(2*time.Minute), 1)
	if len(got) != 1 || got[0].ID != "later" {
		t.Fatalf("after not_before, Ready = %v, want [later]", got)
	}
	if got, err := s.ReadyOnline(ctx, "echo", t0, 10); err != nil || len(got) != 0 {
		t.Fatalf("ReadyOnline with only batch tasks queued = %v, %v; want none", got, err)
	}
	// Online tasks come before batch ones whatever their priority.
	for i, p := range []int{-5, 0} {
		tk := NewTask(fmt.Sprintf("on%d", i), "echo")
		tk.Priority, tk.Class = p, store.Online
		mustCreate(t, s, tk)
	}
	got, err = s.Ready(ctx, "echo", t0, 3)
	if err != nil {
		t.Fatal(err)
	}
	ids = ids[:0]
	for _, tk := range got {
		ids = append(ids, tk.ID)
	}
	if fmt.Sprint(ids) != "[on1 on0 t1]" {
		t.Fatalf("Ready order with online tasks = %v, want [on1 on0 t1] (online first, then priority)", ids)
	}
	for limit, want := range []string{"[]", "[on1]", "[on1 on0]", "[on1 on0]"} {
		got, err := s.ReadyOnline(ctx, "echo", t0, limit)
		if err != nil {
			t.Fatalf("ReadyOnline limit %d: %v", limit, err)
		}
		ids = ids[:0]
		for _, tk := range got {
			ids = append(ids, tk.ID)
		}
		if fmt.Sprint(ids) != want {
			t.Fatalf("ReadyOnline limit %d = %v, want %s (online tasks alone, in Ready's order)", limit, ids, want)
		}
	}
	// Every limit is kept exactly, whatever the store does with it (SQLite rounds the
	// LIMIT it prepares up to a power of two and stops reading at the limit).
	want := []string{"on1", "on0", "t1", "t3", "t0", "t2", "t4"}
	for limit := 0; limit <= len(want)+2; limit++ {
		got, err := s.Ready(ctx, "echo", t0, limit)
		if err != nil {
			t.Fatalf("Ready limit %d: %v", limit, err)
		}
		ids = ids[:0]
		for _, tk := range got {
			ids = append(ids, tk.ID)
		}
		if w := want[:min(limit, len(want))]; fmt.Sprint(ids) != fmt.Sprint(w) {
			t.Fatalf("Ready limit %d = %v, want %v", limit, ids, w)
		}
	}
}

func testReadyStats(t *testing.T, s store.Store) {
	ctx := context.Background()
	// echo: two ready (created at t0+2s and t0+1s), one not yet ready, one leased;
	// wait: one created at t0 but not before t0+3s; sleep: one online task; idle: none.
	for i, d := range []time.Duration{2 * time.Second, time.Second} {
		tk := NewTask(fmt.Sprintf("e%d", i), "echo")
		tk.CreatedAt, tk.Priority = t0.Add(d), i
		mustCreate(t, s, tk)
	}
	nb := NewTask("nb", "wait")
	nb.NotBefore = t0.Add(3 * time.Second)
	mustCreate(t, s, nb)
	later := NewTask("later", "echo")
	later.NotBefore = t0.Add(time.Hour)
	mustCreate(t, s, later)
	leased := NewTask("leased", "echo")
	leased.CreatedAt = t0.Add(-time.Hour)
	mustCreate(t, s, leased)
	if _, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "leased", AgentID: "a", ExpiresAt: t0.Add(time.Minute), Secret: "s"}}); err != nil {
		t.Fatal(err)
	}
	on := NewTask("on", "sleep")
	on.Class, on.CreatedAt = store.Online, t0.Add(5*time.Second)
	mustCreate(t, s, on)
	now := t0.Add(10 * time.Second)
	got, err := s.ReadyStats(ctx, []string{"echo", "idle", "sleep", "wait"}, now, 100)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Type < got[j].Type })
	want := []store.ReadyStat{{Type: "echo", N: 2, Oldest: t0.Add(time.Second)}, {Type: "sleep", N: 1, Oldest: t0.Add(5 * time.Second)},
		{Type: "wait", N: 1, Oldest: t0.Add(3 * time.Second)}} // ready at its not_before, not at its creation
	if len(got) != len(want) {
		t.Fatalf("ReadyStats = %+v, want %+v (types with nothing ready left out; not_before and leases respected)", got, want)
	}
	for i := range want {
		if got[i].Type != want[i].Type || got[i].N != want[i].N || !got[i].Oldest.Equal(want[i].Oldest) {
			t.Fatalf("ReadyStats = %+v, want %+v", got, want)
		}
	}
	// The limit caps the count and bounds what is read: the first by priority (e1,
	// then e0), so the oldest counted under limit 1 is e1's creation.
	got, err = s.ReadyStats(ctx, []string{"echo"}, now, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].N != 1 || !got[0].Oldest.Equal(t0.Add(time.Second)) {
		t.Fatalf("ReadyStats limit 1 = %+v, want echo N 1 oldest %v", got, t0.Add(time.Second))
	}
	if got, err := s.ReadyStats(ctx, nil, now, 100); err != nil || len(got) != 0 {
		t.Fatalf("ReadyStats of no types = %+v, %v; want nothing", got, err)
	}
}

func testLeaseFencing(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	got, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag1", ExpiresAt: t0.Add(time.Second)}})
	if err != nil || len(got) != 1 {
		t.Fatalf("Lease = %v, %v", got, err)
	}
	l1 := got[0]
	if l1.State != store.Leased || l1.LeaseID == 0 || l1.Attempt != 1 || l1.AgentID != "ag1" || string(l1.Payload) != "p-a" {
		t.Fatalf("leased task = %+v", l1)
	}
	// A second lease of a leased task is skipped.
	again, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag2", ExpiresAt: t0.Add(time.Second)}})
	if err != nil || len(again) != 0 {
		t.Fatalf("leasing a leased task = %v, %v; want nothing leased", again, err)
	}
	// Requeue (lease expired), lease again: the lease id grows.
	msg := "lease expired"
	if _, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased}, LeaseID: l1.LeaseID, To: store.Queued,
		Now: t0, Error: &msg, EndAttempt: true, Retryable: true}); err != nil {
		t.Fatal(err)
	}
	got, err = s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag2", ExpiresAt: t0.Add(time.Second)}})
	if err != nil || len(got) != 1 {
		t.Fatalf("re-Lease = %v, %v", got, err)
	}
	if got[0].LeaseID <= l1.LeaseID || got[0].Attempt != 2 {
		t.Fatalf("second lease id %d (attempt %d), first %d: the fencing token must grow", got[0].LeaseID, got[0].Attempt, l1.LeaseID)
	}
	// The old lease cannot complete the task.
	_, err = s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased, store.Running}, LeaseID: l1.LeaseID, To: store.Succeeded, Now: t0})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("completing with a superseded lease: err = %v, want ErrConflict", err)
	}
	att, err := s.Attempts(ctx, "a")
	if err != nil || len(att) != 2 {
		t.Fatalf("Attempts = %v, %v", att, err)
	}
	if att[0].State != store.Queued || att[0].Error != msg || !att[0].Retryable || att[0].AgentID != "ag1" || att[1].State != store.Running || att[1].AgentID != "ag2" {
		t.Fatalf("attempts = %+v", att)
	}
}

func testUpdateCAS(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	l, _ := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag", ExpiresAt: t0.Add(time.Second)}})
	id := l[0].LeaseID
	r, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased}, LeaseID: id, To: store.Running, Now: t0, Started: true})
	if err != nil || r.State != store.Running || r.StartedAt.IsZero() {
		t.Fatalf("start = %+v, %v", r, err)
	}
	out := []byte("result")
	done, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased, store.Running}, LeaseID: id,
		To: store.Succeeded, Now: t0.Add(time.Second), Output: &out, Outputs: map[string][]byte{"extra": []byte("x")},
		OutputSHA256: "abc", EndAttempt: true, Usage: store.Usage{Wall: 2 * time.Second, CPU: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if done.State != store.Succeeded || string(done.Output) != "result" || string(done.Outputs["extra"]) != "x" || done.OutputSHA256 != "abc" || done.FinishedAt.IsZero() {
		t.Fatalf("completed task = %+v", done)
	}
	// The same completion again loses the swap and changes nothing.
	other := []byte("other")
	cur, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased, store.Running}, LeaseID: id, To: store.Failed, Now: t0.Add(time.Hour), Output: &other})
	if !errors.Is(err, store.ErrConflict) || cur.State != store.Succeeded || string(cur.Output) != "result" {
		t.Fatalf("repeated completion = %+v, %v; want ErrConflict and the task unchanged", cur, err)
	}
	att, _ := s.Attempts(ctx, "a")
	if len(att) != 1 || att[0].State != store.Succeeded || att[0].Usage.Wall != 2*time.Second || att[0].SHA256 != "abc" {
		t.Fatalf("attempts = %+v", att)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "missing", From: []store.State{store.Queued}, To: store.Cancelled}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("updating a missing task: %v, want ErrNotFound", err)
	}
}

// testLateStart: a start recorded with the attempt's end (the server defers the start
// of a short task's attempt to its report) keeps the start's own time.
func testLateStart(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	l, _ := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
	started, now := t0.Add(250*time.Millisecond), t0.Add(2*time.Second)
	out := []byte("r")
	done, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased, store.Running}, LeaseID: l[0].LeaseID,
		To: store.Succeeded, Now: now, Output: &out, EndAttempt: true, Started: true, StartedAt: started})
	if err != nil {
		t.Fatal(err)
	}
	if !done.StartedAt.Equal(started) || !done.FinishedAt.Equal(now) {
		t.Fatalf("started %v, finished %v; want %v and %v", done.StartedAt, done.FinishedAt, started, now)
	}
	if got, _ := s.Get(ctx, "a"); !got.StartedAt.Equal(started) {
		t.Fatalf("stored StartedAt = %v, want %v", got.StartedAt, started)
	}
}

func testRenewExpire(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	mustCreate(t, s, NewTask("b", "echo"))
	ls, _ := s.Lease(ctx, t0, []store.Grant{
		{TaskID: "a", AgentID: "ag", ExpiresAt: t0.Add(time.Second)},
		{TaskID: "b", AgentID: "ag", ExpiresAt: t0.Add(time.Second)},
	})
	if len(ls) != 2 {
		t.Fatalf("leased %d", len(ls))
	}
	n, err := s.Renew(ctx, "ag", []store.LeaseRef{{TaskID: "a", LeaseID: ls[0].LeaseID}, {TaskID: "b", LeaseID: ls[1].LeaseID + 7}}, t0.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Renew = %d, %v; want 1 (the stale lease of b ignored)", n, err)
	}
	if n, _ := s.Renew(ctx, "someone-else", []store.LeaseRef{{TaskID: "b", LeaseID: ls[1].LeaseID}}, t0.Add(time.Minute)); n != 0 {
		t.Fatalf("another agent renewed b's lease")
	}
	exp, err := s.Expired(ctx, t0.Add(2*time.Second), 10)
	if err != nil || len(exp) != 1 || exp[0].ID != "b" {
		t.Fatalf("Expired = %v, %v; want [b]", exp, err)
	}
	live, err := s.Live(ctx)
	if err != nil || len(live) != 2 {
		t.Fatalf("Live = %v, %v", live, err)
	}
}

func testListFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := 0; i < 25; i++ {
		tk := NewTask(fmt.Sprintf("t%02d", i), []string{"echo", "sleep"}[i%2])
		if i%5 == 0 {
			tk.Tenant = "acme"
		}
		mustCreate(t, s, tk)
	}
	var all []string
	tok := ""
	for {
		page, next, err := s.List(ctx, store.Filter{Limit: 10, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range page {
			all = append(all, tk.ID)
			if tk.Payload != nil {
				t.Fatalf("List returned a payload")
			}
		}
		if next == "" {
			break
		}
		tok = next
	}
	if len(all) != 25 || all[0] != "t24" || all[24] != "t00" {
		t.Fatalf("paged list = %v", all)
	}
	echo, _, _ := s.List(ctx, store.Filter{Type: "echo", Tenant: "acme"})
	if len(echo) != 3 { // t00, t10, t20
		t.Fatalf("type+tenant filter gave %d tasks, want 3", len(echo))
	}
	q, _, _ := s.List(ctx, store.Filter{State: store.Succeeded})
	if len(q) != 0 {
		t.Fatalf("state filter gave %d", len(q))
	}
	if _, _, err := s.List(ctx, store.Filter{PageToken: "garbage"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad page token: %v", err)
	}
}

func testCounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	mustCreate(t, s, NewTask("b", "echo"))
	mustCreate(t, s, NewTask("c", "sleep"))
	s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag", ExpiresAt: t0}})
	cs, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, c := range cs {
		got[c.Type+"/"+string(c.State)] = c.N
	}
	if got["echo/leased"] != 1 || got["echo/queued"] != 1 || got["sleep/queued"] != 1 || len(got) != 3 {
		t.Fatalf("Counts = %v", got)
	}
	// A finished task is not counted.
	if _, err := s.Update(ctx, store.Update{TaskID: "b", From: []store.State{store.Queued}, To: store.Cancelled, Now: t0}); err != nil {
		t.Fatal(err)
	}
	cs, err = s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("Counts after a cancel = %v; want echo/leased and sleep/queued only", cs)
	}
}

// finishAt leases task id and settles it in state to at time at, with one attempt.
func finishAt(t *testing.T, s store.Store, id string, to store.State, at time.Time) {
	t.Helper()
	ctx := context.Background()
	ls, err := s.Lease(ctx, at.Add(-time.Second), []store.Grant{{TaskID: id, AgentID: "ag", ExpiresAt: at.Add(time.Minute)}})
	if err != nil || len(ls) != 1 {
		t.Fatalf("leasing %s: %v, %v", id, ls, err)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: id, From: []store.State{store.Leased}, LeaseID: ls[0].LeaseID, To: to, Now: at, EndAttempt: true}); err != nil {
		t.Fatalf("settling %s as %s: %v", id, to, err)
	}
}

func testDeleteFinished(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := NewTask("old", "echo")
	old.InputBlobs = map[string]store.BlobRef{"in": {Digest: dIn, Size: 1}}
	old.IdempotencyKey = "k-old"
	mustCreate(t, s, old)
	mustCreate(t, s, NewTask("new", "echo"))
	mustCreate(t, s, NewTask("dead", "echo"))
	mustCreate(t, s, NewTask("live", "echo"))
	finishAt(t, s, "old", store.Succeeded, t0)
	finishAt(t, s, "new", store.Succeeded, t0.Add(time.Hour))
	finishAt(t, s, "dead", store.Dead, t0)

	if _, err := s.DeleteFinished(ctx, store.Queued, t0.Add(2*time.Hour), 10); err == nil {
		t.Fatal("DeleteFinished of a live state: no error")
	}
	n, err := s.DeleteFinished(ctx, store.Succeeded, t0.Add(time.Minute), 10)
	if err != nil || n != 1 {
		t.Fatalf("DeleteFinished(succeeded, before t0+1m) = %d, %v; want 1 (only the old one)", n, err)
	}
	if _, err := s.Get(ctx, "old"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of a deleted task: %v, want ErrNotFound", err)
	}
	if as, err := s.Attempts(ctx, "old"); err == nil && len(as) != 0 {
		t.Fatalf("a deleted task still has %d attempts", len(as))
	}
	if used, err := s.BlobInUse(ctx, dIn, t0.Add(-time.Hour)); err != nil || used {
		t.Fatalf("BlobInUse of a deleted task's input = %v, %v; want false", used, err)
	}
	for _, id := range []string{"new", "dead", "live"} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Fatalf("task %s should be kept: %v", id, err)
		}
	}
	// Its idempotency key is free again (as River's unique jobs are after cleaning).
	again := NewTask("old2", "echo")
	again.IdempotencyKey = "k-old"
	if _, created, err := s.Create(ctx, again); err != nil || !created {
		t.Fatalf("Create with a deleted task's idempotency key: created %v, %v", created, err)
	}
	// The limit bounds one call.
	for i := range 5 {
		id := fmt.Sprintf("batch-%d", i)
		mustCreate(t, s, NewTask(id, "echo"))
		finishAt(t, s, id, store.Cancelled, t0)
	}
	if n, err := s.DeleteFinished(ctx, store.Cancelled, t0.Add(time.Minute), 3); err != nil || n != 3 {
		t.Fatalf("DeleteFinished with limit 3 = %d, %v", n, err)
	}
	// The tasks deleted lost their attempts, and the tasks kept kept theirs: no orphan
	// rows, whichever three of the five (all finished at the same time) were chosen.
	kept := 0
	for i := range 5 {
		id := fmt.Sprintf("batch-%d", i)
		as, aerr := s.Attempts(ctx, id)
		_, gerr := s.Get(ctx, id)
		switch {
		case gerr == nil && (aerr != nil || len(as) == 0):
			t.Fatalf("task %s was kept without its attempts (%v)", id, aerr)
		case gerr == nil:
			kept++
		case aerr == nil && len(as) != 0:
			t.Fatalf("task %s was deleted but %d attempts are left", id, len(as))
		}
	}
	if kept != 2 {
		t.Fatalf("%d of 5 tasks kept after deleting 3", kept)
	}
	if n, err := s.DeleteFinished(ctx, store.Cancelled, t0.Add(time.Minute), 3); err != nil || n != 2 {
		t.Fatalf("second DeleteFinished = %d, %v; want the 2 left", n, err)
	}
}

func testIllegalUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	_, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Queued}, To: store.Succeeded})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("queued → succeeded: err = %v, want ErrInvalid", err)
	}
	if tk, _ := s.Get(ctx, "a"); tk.State != store.Queued {
		t.Fatalf("illegal update changed the task to %s", tk.State)
	}
}

// Digests for the blob tests.
const (
	dIn     = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	dOut    = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	dShared = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
	dNone   = "sha256:4444444444444444444444444444444444444444444444444444444444444444"
)

func testBlobRefs(t *testing.T, s store.Store) {
	ctx := context.Background()
	in := NewTask("a", "echo")
	in.InputBlobs = map[string]store.BlobRef{"big": {Digest: dIn, Size: 1 << 40}, "other": {Digest: dShared, Size: 3}}
	mustCreate(t, s, in)
	got, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.InputBlobs) != 2 || got.InputBlobs["big"] != in.InputBlobs["big"] || got.InputBlobs["other"] != in.InputBlobs["other"] || got.OutputBlobs != nil {
		t.Fatalf("Get: input blobs %v, output blobs %v; want %v and none", got.InputBlobs, got.OutputBlobs, in.InputBlobs)
	}
	ls, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}})
	if err != nil || len(ls) != 1 || ls[0].InputBlobs["big"].Digest != dIn {
		t.Fatalf("Lease = %+v, %v; want the task with its input blobs", ls, err)
	}
	outs := map[string]store.BlobRef{"result": {Digest: dOut, Size: 42}}
	done, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased, store.Running}, LeaseID: ls[0].LeaseID,
		To: store.Succeeded, Now: t0.Add(time.Second), OutputBlobs: outs, EndAttempt: true})
	if err != nil || done.OutputBlobs["result"] != outs["result"] || done.InputBlobs["big"].Digest != dIn {
		t.Fatalf("success with output blobs = %+v, %v", done, err)
	}
	got, _ = s.Get(ctx, "a")
	if len(got.OutputBlobs) != 1 || got.OutputBlobs["result"] != outs["result"] {
		t.Fatalf("Get after success: output blobs %v, want %v", got.OutputBlobs, outs)
	}
	list, _, err := s.List(ctx, store.Filter{})
	if err != nil || len(list) != 1 || list[0].InputBlobs != nil || list[0].OutputBlobs != nil {
		t.Fatalf("List = %+v, %v; want one task without blob references", list, err)
	}
}

func testBlobInUse(t *testing.T, s store.Store) {
	ctx := context.Background()
	inUse := func(d string, since time.Time) bool {
		t.Helper()
		used, err := s.BlobInUse(ctx, d, since)
		if err != nil {
			t.Fatalf("BlobInUse(%s): %v", d, err)
		}
		return used
	}
	future := t0.Add(100 * time.Hour)
	if inUse(dNone, time.Time{}) {
		t.Fatalf("a digest no task names is in use")
	}
	// A queued task keeps its inputs in use however old.
	q := NewTask("q", "echo")
	q.InputBlobs = map[string]store.BlobRef{"x": {Digest: dShared, Size: 1}}
	mustCreate(t, s, q)
	if !inUse(dShared, future) {
		t.Fatalf("the input of a queued task is not in use")
	}
	// A running task too; it finishes at t0+1h with an output.
	r := NewTask("r", "echo")
	r.InputBlobs = map[string]store.BlobRef{"x": {Digest: dIn, Size: 1}}
	mustCreate(t, s, r)
	ls, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "r", AgentID: "ag", ExpiresAt: t0.Add(time.Hour)}})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Lease = %v, %v", ls, err)
	}
	if !inUse(dIn, future) {
		t.Fatalf("the input of a leased task is not in use")
	}
	if inUse(dOut, time.Time{}) {
		t.Fatalf("an output is in use before any task names it")
	}
	end := t0.Add(time.Hour)
	if _, err := s.Update(ctx, store.Update{TaskID: "r", From: []store.State{store.Leased}, LeaseID: ls[0].LeaseID, To: store.Succeeded,
		Now: end, OutputBlobs: map[string]store.BlobRef{"y": {Digest: dOut, Size: 2}}, EndAttempt: true}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dIn, dOut} {
		if !inUse(d, end.Add(-time.Minute)) {
			t.Fatalf("%s of a task that finished after since is not in use", d)
		}
		if inUse(d, end) {
			t.Fatalf("%s of a task that finished before since is still in use", d)
		}
	}
	// Cancelling the queued task ends its hold once it is older than since.
	cancelAt := t0.Add(2 * time.Hour)
	if _, err := s.Update(ctx, store.Update{TaskID: "q", From: []store.State{store.Queued}, To: store.Cancelled, Now: cancelAt}); err != nil {
		t.Fatal(err)
	}
	if !inUse(dShared, cancelAt.Add(-time.Second)) || inUse(dShared, cancelAt) {
		t.Fatalf("the input of a cancelled task: in use must follow its finish time")
	}
}

func testTouchBlobs(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.TouchBlobs(ctx, []string{dNone}, t0); err != nil {
		t.Fatal(err)
	}
	if used, err := s.BlobInUse(ctx, dNone, t0.Add(-time.Second)); err != nil || !used {
		t.Fatalf("a blob referenced after since: in use = %v, %v; want true", used, err)
	}
	if used, err := s.BlobInUse(ctx, dNone, t0); err != nil || used {
		t.Fatalf("a blob last referenced at since: in use = %v, %v; want false", used, err)
	}
	// A later touch moves the clock on; an earlier one does not move it back.
	if err := s.TouchBlobs(ctx, []string{dNone, dIn}, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchBlobs(ctx, []string{dNone}, t0); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dNone, dIn} {
		if used, err := s.BlobInUse(ctx, d, t0.Add(time.Hour-time.Second)); err != nil || !used {
			t.Fatalf("%s touched at t0+1h: in use since t0+1h-1s = %v, %v; want true", d, used, err)
		}
	}
}

func testLeaseSecret(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("a", "echo"))
	got, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag1", ExpiresAt: t0.Add(time.Second), Secret: "s3cret"}})
	if err != nil || len(got) != 1 || got[0].LeaseSecret != "s3cret" {
		t.Fatalf("Lease = %+v, %v; want the task with LeaseSecret s3cret", got, err)
	}
	tk, err := s.Get(ctx, "a")
	if err != nil || tk.LeaseSecret != "s3cret" {
		t.Fatalf("Get after Lease: LeaseSecret %q, %v; want s3cret", tk.LeaseSecret, err)
	}
	live, err := s.Live(ctx)
	if err != nil || len(live) != 1 || live[0].LeaseSecret != "s3cret" {
		t.Fatalf("Live = %+v, %v; want the lease secret", live, err)
	}
}

func testCreateBatch(t *testing.T, s store.Store) {
	ctx := context.Background()
	first := NewTask("k1", "echo")
	first.IdempotencyKey = "key-1"
	mustCreate(t, s, first)

	again := NewTask("k1-again", "echo")
	again.IdempotencyKey = "key-1"
	dupA, dupB := NewTask("d-a", "echo"), NewTask("d-b", "echo")
	dupA.IdempotencyKey, dupB.IdempotencyKey = "key-2", "key-2"
	withBlob := NewTask("blob", "sum")
	withBlob.InputBlobs = map[string]store.BlobRef{"in": {Digest: dIn, Size: 5}}
	batch := []store.Task{NewTask("p", "echo"), again, dupA, dupB, withBlob}
	stored, created, err := s.CreateBatch(ctx, batch)
	if err != nil || len(stored) != len(batch) || len(created) != len(batch) {
		t.Fatalf("CreateBatch = %d tasks, %v, %v", len(stored), created, err)
	}
	wantID := []string{"p", "k1", "d-a", "d-a", "blob"}
	wantCreated := []bool{true, false, true, false, true}
	for i := range batch {
		if stored[i].ID != wantID[i] || created[i] != wantCreated[i] || stored[i].State != store.Queued {
			t.Errorf("result %d = %s created %v state %s; want %s created %v queued", i, stored[i].ID, created[i], stored[i].State, wantID[i], wantCreated[i])
		}
	}
	if used, err := s.BlobInUse(ctx, dIn, t0); err != nil || !used {
		t.Errorf("the batch's input blob is not in use: %v, %v", used, err)
	}
	// All or nothing: an invalid task fails the batch and stores nothing.
	bad := NewTask("bad", "")
	if _, _, err := s.CreateBatch(ctx, []store.Task{NewTask("ok-1", "echo"), bad}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CreateBatch with a task without a type: %v, want ErrInvalid", err)
	}
	if _, err := s.Get(ctx, "ok-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed batch stored its valid task: %v", err)
	}
	// A duplicate id fails the whole batch too (the first task is not kept).
	if _, _, err := s.CreateBatch(ctx, []store.Task{NewTask("ok-2", "echo"), NewTask("p", "echo")}); err == nil {
		t.Fatal("CreateBatch with an id already stored: no error")
	}
	if _, err := s.Get(ctx, "ok-2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed batch stored its first task: %v", err)
	}
}

// testFailureKind: every failure kind an attempt ends with is stored with that attempt
// and read back as written; a running and a successful attempt have none.
func testFailureKind(t *testing.T, s store.Store) {
	ctx := context.Background()
	tk := NewTask("a", "echo")
	tk.MaxAttempts = len(store.FailureKinds) + 1
	mustCreate(t, s, tk)
	for i, kind := range store.FailureKinds {
		l, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag", ExpiresAt: t0.Add(time.Second)}})
		if err != nil || len(l) != 1 {
			t.Fatalf("lease %d = %v, %v", i+1, l, err)
		}
		msg := "failed: " + string(kind)
		if _, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased}, LeaseID: l[0].LeaseID, To: store.Queued,
			Now: t0, Error: &msg, EndAttempt: true, Retryable: true, FailureKind: kind}); err != nil {
			t.Fatalf("ending attempt %d with kind %q: %v", i+1, kind, err)
		}
	}
	l, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "a", AgentID: "ag", ExpiresAt: t0.Add(time.Second)}})
	if err != nil || len(l) != 1 {
		t.Fatalf("last lease = %v, %v", l, err)
	}
	att, err := s.Attempts(ctx, "a")
	if err != nil || len(att) != len(store.FailureKinds)+1 {
		t.Fatalf("Attempts = %d attempts, %v; want %d", len(att), err, len(store.FailureKinds)+1)
	}
	if k := att[len(att)-1].FailureKind; k != store.NoFailure {
		t.Fatalf("running attempt has failure kind %q, want none", k)
	}
	out := []byte("ok")
	if _, err := s.Update(ctx, store.Update{TaskID: "a", From: []store.State{store.Leased}, LeaseID: l[0].LeaseID, To: store.Succeeded,
		Now: t0, Output: &out, EndAttempt: true}); err != nil {
		t.Fatal(err)
	}
	att, err = s.Attempts(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for i, kind := range store.FailureKinds {
		if att[i].FailureKind != kind || att[i].Error != "failed: "+string(kind) {
			t.Errorf("attempt %d: failure kind %q, error %q; want %q", i+1, att[i].FailureKind, att[i].Error, kind)
		}
	}
	if last := att[len(att)-1]; last.State != store.Succeeded || last.FailureKind != store.NoFailure {
		t.Errorf("successful attempt: state %s, failure kind %q; want succeeded with none", last.State, last.FailureKind)
	}
}

// testPreemptions: an attempt ended with Preempted counts a preemption, which Next does
// not charge against MaxAttempts.
func testPreemptions(t *testing.T, s store.Store) {
	ctx := context.Background()
	tk := NewTask("p", "echo")
	tk.MaxAttempts = 1
	mustCreate(t, s, tk)
	for i := 1; i <= 3; i++ {
		l, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "p", AgentID: "ag", ExpiresAt: t0.Add(time.Second)}})
		if err != nil || len(l) != 1 {
			t.Fatalf("lease %d = %v, %v", i, l, err)
		}
		if to, err := store.Next(l[0], store.EvFailRetryable); err != nil || to != store.Dead {
			t.Fatalf("attempt %d of 1 (after %d preemptions): a failure goes to %s, %v; want dead", i, i-1, to, err)
		}
		msg := "preempted"
		nt, err := s.Update(ctx, store.Update{TaskID: "p", From: []store.State{store.Leased}, LeaseID: l[0].LeaseID, To: store.Queued,
			Now: t0, Error: &msg, EndAttempt: true, Retryable: true, FailureKind: store.Preempted, Preempted: true})
		if err != nil {
			t.Fatal(err)
		}
		if nt.Attempt != i || nt.Preemptions != i {
			t.Fatalf("after preemption %d: attempt %d, preemptions %d", i, nt.Attempt, nt.Preemptions)
		}
	}
	got, err := s.Get(ctx, "p")
	if err != nil || got.Preemptions != 3 || got.State != store.Queued {
		t.Fatalf("Get = %+v, %v; want queued with 3 preemptions", got, err)
	}
	ls, _, err := s.List(ctx, store.Filter{Type: "echo"})
	if err != nil || len(ls) != 1 || ls[0].Preemptions != 3 {
		t.Fatalf("List = %+v, %v; want the task with 3 preemptions", ls, err)
	}
}

// testWaiting: a task created with upstreams is Waiting, is not Ready, is listed with its
// upstreams (the server reloads the waiting set so), keeps its blobs in use, and moves to
// Queued with the resolved input blobs added, or to Failed; nothing else leaves Waiting.
func testWaiting(t *testing.T, s store.Store) {
	ctx := context.Background()
	up := mustCreate(t, s, NewTask("up", "compress"))
	own := store.BlobRef{Digest: "sha256:" + fmt.Sprintf("%064x", 1), Size: 10}
	out := store.BlobRef{Digest: "sha256:" + fmt.Sprintf("%064x", 2), Size: 20}
	down := NewTask("down", "checksum")
	down.InputBlobs = map[string]store.BlobRef{"own": own}
	down.Upstreams = map[string]store.Upstream{"data": {TaskID: up.ID, Output: "out"}}
	got := mustCreate(t, s, down)
	if got.State != store.Waiting || got.Upstreams["data"] != (store.Upstream{TaskID: "up", Output: "out"}) {
		t.Fatalf("Create with upstreams = state %s, upstreams %v; want waiting with data <- up/out", got.State, got.Upstreams)
	}
	other := NewTask("other", "checksum")
	other.Upstreams = map[string]store.Upstream{"in": {TaskID: up.ID}}
	mustCreate(t, s, other)
	ready, err := s.Ready(ctx, "checksum", t0.Add(time.Hour), 10)
	if err != nil || len(ready) != 0 {
		t.Fatalf("Ready(checksum) = %v, %v; want none (waiting tasks are not ready)", ready, err)
	}
	ws, _, err := s.List(ctx, store.Filter{State: store.Waiting})
	if err != nil || len(ws) != 2 {
		t.Fatalf("List(waiting) = %d tasks, %v; want 2", len(ws), err)
	}
	for _, w := range ws {
		if len(w.Upstreams) != 1 {
			t.Fatalf("List(waiting) returned task %s without its upstreams: %+v", w.ID, w)
		}
	}
	if used, err := s.BlobInUse(ctx, own.Digest, t0.Add(time.Hour)); err != nil || !used {
		t.Fatalf("BlobInUse(input of a waiting task) = %v, %v; want true", used, err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, c := range counts {
		if c.State == store.Waiting && c.Type == "checksum" {
			n = c.N
		}
	}
	if n != 2 {
		t.Fatalf("Counts = %v; want 2 waiting checksum tasks", counts)
	}
	if _, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "down", AgentID: "a", ExpiresAt: t0.Add(time.Minute), Secret: "s"}}); err != nil {
		t.Fatal(err)
	}
	if tk, _ := s.Get(ctx, "down"); tk.State != store.Waiting {
		t.Fatalf("Lease took a waiting task to %s; want it left waiting", tk.State)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "down", From: []store.State{store.Waiting}, To: store.Running, Now: t0}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Update waiting -> running = %v; want ErrInvalid", err)
	}
	in := map[string]store.BlobRef{"own": own, "data": out}
	inline := map[string][]byte{"mine": []byte("m"), "small": []byte("an upstream's inline output")}
	q, err := s.Update(ctx, store.Update{TaskID: "down", From: []store.State{store.Waiting}, To: store.Queued, Now: t0.Add(time.Second), InputBlobs: in, Inputs: inline})
	if err != nil || q.State != store.Queued || q.InputBlobs["data"] != out || q.InputBlobs["own"] != own {
		t.Fatalf("Update waiting -> queued = %+v, %v; want queued with inputs own and data", q, err)
	}
	if g, err := s.Get(ctx, "down"); err != nil || len(g.Inputs) != 2 || string(g.Inputs["small"]) != "an upstream's inline output" || string(g.Inputs["mine"]) != "m" {
		t.Fatalf("Get after resolving = inputs %q, %v; want the inline inputs the update set", g.Inputs, err)
	}
	if ready, err := s.Ready(ctx, "checksum", t0.Add(time.Hour), 10); err != nil || len(ready) != 1 || ready[0].ID != "down" || ready[0].InputBlobs["data"] != out {
		t.Fatalf("Ready after resolving = %v, %v; want [down] with its input blobs (the dispatcher places by them)", ready, err)
	}
	if used, err := s.BlobInUse(ctx, out.Digest, t0.Add(time.Hour)); err != nil || !used {
		t.Fatalf("BlobInUse(resolved upstream output) = %v, %v; want true (recorded as the task's input)", used, err)
	}
	msg := "upstream up ended dead"
	f, err := s.Update(ctx, store.Update{TaskID: "other", From: []store.State{store.Waiting}, To: store.Failed, Now: t0.Add(time.Second), Error: &msg, FailureKind: store.UpstreamFailed})
	if err != nil || f.State != store.Failed || f.Error != msg || f.FinishedAt.IsZero() || f.FailureKind != store.UpstreamFailed {
		t.Fatalf("Update waiting -> failed = %+v, %v; want failed with the reason and kind upstream_failed", f, err)
	}
	if g, err := s.Get(ctx, "other"); err != nil || g.FailureKind != store.UpstreamFailed {
		t.Fatalf("Get of a task failed without an attempt: kind %q, %v; want upstream_failed (Task.FailureKind)", g.FailureKind, err)
	}
	if _, err := s.Update(ctx, store.Update{TaskID: "other", From: []store.State{store.Waiting}, To: store.Queued, Now: t0}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("resolving a task no longer waiting = %v; want ErrConflict", err)
	}
}
