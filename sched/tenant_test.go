package sched_test

// Tenants and accounting through the real API (connect over HTTP, real SQLite) with
// the real test agent process running real handler subprocesses.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/console"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

const (
	adminToken = "admin-secret-token"
	agentToken = "agent-secret-token"
)

// tenantConfig is fastConfig with authentication on.
func tenantConfig() sched.Config {
	c := fastConfig()
	c.Dev, c.Token, c.AgentToken = false, adminToken, agentToken
	return c
}

// clients are the API clients of one token.
type clients struct {
	tasks   paddockv1connect.TaskServiceClient
	tenants paddockv1connect.TenantServiceClient
	cluster paddockv1connect.ClusterServiceClient
	token   string
}

func clientsFor(ts *testServer, token string) clients {
	o := connect.WithInterceptors(bearer(token))
	return clients{tasks: paddockv1connect.NewTaskServiceClient(http.DefaultClient, ts.url, o),
		tenants: paddockv1connect.NewTenantServiceClient(http.DefaultClient, ts.url, o),
		cluster: paddockv1connect.NewClusterServiceClient(http.DefaultClient, ts.url, o), token: token}
}

// newToken has the admin make a token for tenant tn and returns its text.
func newToken(t *testing.T, admin clients, tn string) string {
	t.Helper()
	r, err := admin.tenants.CreateToken(context.Background(), connect.NewRequest(&paddockv1.CreateTokenRequest{Tenant: tn}))
	if err != nil {
		t.Fatalf("creating a token for %s: %v", tn, err)
	}
	return r.Msg.GetToken()
}

// startTenantAgent starts the real test agent, with the agent token, serving the
// test handler's 10 types, offering memory bytes. Its total slots are 9 + busy: each
// type keeps its minimum of 1, so one busy type gets at most busy slots.
func startTenantAgent(t *testing.T, ts *testServer, id string, busy int, memory int64) {
	t.Helper()
	needBins(t)
	startProc(t, "agent-"+id, "TESTAGENT READY", bins.agent, "-server", ts.agentAddr, "-id", id, "-token", agentToken,
		"-total", fmt.Sprint(9+busy), "-memory", fmt.Sprint(memory), "-handler", "testhandler="+bins.testhandler)
}

func submitAs(t *testing.T, c clients, spec *paddockv1.TaskSpec) string {
	t.Helper()
	r, err := c.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
	if err != nil {
		t.Fatalf("submit %s: %v", spec.GetType(), err)
	}
	return r.Msg.GetTask().GetId()
}

func waitState(t *testing.T, c clients, id string, want paddockv1.State) *paddockv1.Task {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r, err := c.tasks.Get(context.Background(), connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		if r.Msg.GetTask().GetState() == want {
			return r.Msg.GetTask()
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %v after 2 min, want %v", id, r.Msg.GetTask().GetState(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func wantErrCode(t *testing.T, what string, err error, code connect.Code, mention string) {
	t.Helper()
	if connect.CodeOf(err) != code || !strings.Contains(fmt.Sprint(err), mention) {
		t.Errorf("%s: err = %v; want %v mentioning %q", what, err, code, mention)
	}
}

// TestTenantIsolation: tenant A's token cannot get, list, cancel, wait on, retry,
// explain or read the logs of tenant B's tasks (each "not found", as a task that does
// not exist), nor see them in the console feed; a body naming another tenant is
// refused; a revoked token is refused at once.
func TestTenantIsolation(t *testing.T) {
	ts := startServer(t, tenantConfig())
	startTenantAgent(t, ts, "iso-1", 4, 1<<30)
	admin := clientsFor(ts, adminToken)
	a := clientsFor(ts, newToken(t, admin, "tenant-a"))
	b := clientsFor(ts, newToken(t, admin, "tenant-b"))
	ctx := context.Background()

	// The feed of A, open before B's tasks exist.
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	req, _ := http.NewRequestWithContext(feedCtx, http.MethodGet, ts.url+console.EventsPath, nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	feedResp, err := http.DefaultClient.Do(req)
	if err != nil || feedResp.StatusCode != http.StatusOK {
		t.Fatalf("opening A's feed: %v %v", feedResp, err)
	}
	defer feedResp.Body.Close()
	feedLines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(feedResp.Body)
		for sc.Scan() {
			feedLines <- sc.Text()
		}
		close(feedLines)
	}()

	running := submitAs(t, b, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("2m")})
	failed := submitAs(t, b, &paddockv1.TaskSpec{Type: "test.log", Payload: []byte("b-secret"), MaxAttempts: 1})
	waitState(t, b, running, paddockv1.State_STATE_RUNNING)
	waitState(t, b, failed, paddockv1.State_STATE_SUCCEEDED)
	failedB := submitAs(t, b, &paddockv1.TaskSpec{Type: "test.fail", Payload: []byte("fatal"), MaxAttempts: 1})
	waitState(t, b, failedB, paddockv1.State_STATE_FAILED)
	mine := submitAs(t, a, &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("a")})
	waitState(t, a, mine, paddockv1.State_STATE_SUCCEEDED)

	// What "not found" says for a task that does not exist: B's tasks must look the same.
	const ghost = "00000000-0000-7000-8000-000000000000"
	_, ghostErr := a.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: ghost}))
	wantErrCode(t, "get of a task that does not exist", ghostErr, connect.CodeNotFound, ghost)
	same := func(what, id string, err error) {
		t.Helper()
		wantErrCode(t, what, err, connect.CodeNotFound, id)
		if err != nil && strings.ReplaceAll(err.Error(), id, ghost) != ghostErr.Error() {
			t.Errorf("%s: %q differs from the error for a task that does not exist (%q): it leaks that the id exists", what, err, ghostErr)
		}
	}
	for _, id := range []string{running, failedB} {
		_, err := a.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: id}))
		same("A gets B's task", id, err)
		_, err = a.tasks.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: 100}))
		same("A waits on B's task", id, err)
		_, err = a.tasks.Cancel(ctx, connect.NewRequest(&paddockv1.CancelRequest{Id: id}))
		same("A cancels B's task", id, err)
		_, err = a.tasks.Logs(ctx, connect.NewRequest(&paddockv1.LogsRequest{Id: id}))
		same("A reads the logs of B's task", id, err)
		_, err = a.tasks.Explain(ctx, connect.NewRequest(&paddockv1.ExplainRequest{Id: id}))
		same("A explains B's task", id, err)
		_, err = a.tasks.Retry(ctx, connect.NewRequest(&paddockv1.RetryRequest{Id: id}))
		same("A retries B's task", id, err)
	}
	// Nor can A take B's output as an input of its own task (a pipeline).
	_, err = a.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.echo",
		InputTasks: map[string]string{"in": "@task:" + failed}}}))
	wantErrCode(t, "A's task takes B's output as input", err, connect.CodeNotFound, failed)
	_, err = a.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.echo",
		InputTasks: map[string]string{"in": "@task:" + ghost}}}))
	ghostUp := err
	_, err = a.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.echo",
		InputTasks: map[string]string{"in": "@task:" + failed}}}))
	if err == nil || ghostUp == nil || strings.ReplaceAll(err.Error(), failed, ghost) != ghostUp.Error() {
		t.Errorf("A's upstream of B: %v differs from an upstream that does not exist (%v): it leaks that the id exists", err, ghostUp)
	}
	_, err = a.tasks.Logs(ctx, connect.NewRequest(&paddockv1.LogsRequest{Id: failed}))
	same("A reads the logs of B's finished task", failed, err)
	// B's task was not cancelled by A's attempt, and B still sees and controls it.
	if tk := waitState(t, b, running, paddockv1.State_STATE_RUNNING); tk.GetCancelRequested() {
		t.Fatal("A's cancel reached B's task")
	}
	if _, err := b.tasks.Retry(ctx, connect.NewRequest(&paddockv1.RetryRequest{Id: failedB})); err != nil {
		t.Fatalf("B retries its own failed task: %v", err)
	}

	// A lists only its own tasks; naming B is refused, naming the field.
	l, err := a.tasks.List(ctx, connect.NewRequest(&paddockv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Msg.GetTasks()) != 1 || l.Msg.GetTasks()[0].GetId() != mine {
		t.Errorf("A's list = %d tasks; want only its own %s", len(l.Msg.GetTasks()), mine)
	}
	_, err = a.tasks.List(ctx, connect.NewRequest(&paddockv1.ListRequest{Tenant: "tenant-b"}))
	wantErrCode(t, "A lists tenant-b", err, connect.CodePermissionDenied, "tenant:")
	all, err := admin.tasks.List(ctx, connect.NewRequest(&paddockv1.ListRequest{}))
	if err != nil || len(all.Msg.GetTasks()) != 5 {
		t.Errorf("the admin's list = %d tasks, %v; want all 5", len(all.Msg.GetTasks()), err)
	}

	// A task's tenant comes from the token: a body naming another is refused.
	_, err = a.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.echo", Tenant: "tenant-b"}}))
	wantErrCode(t, "A submits naming tenant-b", err, connect.CodePermissionDenied, "task.tenant")
	_, err = a.tasks.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: []*paddockv1.TaskSpec{{Type: "test.echo"}, {Type: "test.echo", Tenant: "tenant-b"}}}))
	wantErrCode(t, "A batch-submits naming tenant-b", err, connect.CodePermissionDenied, "tasks[1].tenant")
	own := submitAs(t, a, &paddockv1.TaskSpec{Type: "test.echo", Tenant: "tenant-a"})
	if tk := waitState(t, a, own, paddockv1.State_STATE_SUCCEEDED); tk.GetSpec().GetTenant() != "tenant-a" {
		t.Errorf("A's task has tenant %q", tk.GetSpec().GetTenant())
	}
	// The admin acts for a tenant by naming it.
	forB := submitAs(t, admin, &paddockv1.TaskSpec{Type: "test.echo", Tenant: "tenant-b"})
	if tk := waitState(t, b, forB, paddockv1.State_STATE_SUCCEEDED); tk.GetSpec().GetTenant() != "tenant-b" {
		t.Errorf("the admin's task for B has tenant %q", tk.GetSpec().GetTenant())
	}
	// Token management is the admin's.
	_, err = a.tenants.CreateToken(ctx, connect.NewRequest(&paddockv1.CreateTokenRequest{Tenant: "tenant-a", Admin: true}))
	wantErrCode(t, "A creates a token", err, connect.CodePermissionDenied, "admin token")
	_, err = a.tenants.ListTokens(ctx, connect.NewRequest(&paddockv1.ListTokensRequest{}))
	wantErrCode(t, "A lists tokens", err, connect.CodePermissionDenied, "admin token")
	// The cluster's hosts, agents and guests are the operator's: a tenant sees the
	// queues by type (Status), not the machines nor where the store lives.
	_, err = a.cluster.ListAgents(ctx, connect.NewRequest(&paddockv1.ListAgentsRequest{}))
	wantErrCode(t, "A lists agents", err, connect.CodePermissionDenied, "admin token")
	_, err = a.cluster.ListHosts(ctx, connect.NewRequest(&paddockv1.ListHostsRequest{}))
	wantErrCode(t, "A lists hosts", err, connect.CodePermissionDenied, "admin token")
	_, err = a.cluster.ListVMs(ctx, connect.NewRequest(&paddockv1.ListVMsRequest{}))
	wantErrCode(t, "A lists guests", err, connect.CodePermissionDenied, "admin token")
	if st, err := a.cluster.Status(ctx, connect.NewRequest(&paddockv1.StatusRequest{})); err != nil {
		t.Errorf("A's status: %v", err)
	} else if st.Msg.GetStore() != "" || st.Msg.GetAgentsConnected() == 0 || st.Msg.GetAdmin() || st.Msg.GetTenant() != "tenant-a" {
		t.Errorf("A's status: store %q, %d agents connected, admin %v, tenant %q: want no store, the agents counted, not admin, tenant-a",
			st.Msg.GetStore(), st.Msg.GetAgentsConnected(), st.Msg.GetAdmin(), st.Msg.GetTenant())
	}
	if ag, err := admin.cluster.ListAgents(ctx, connect.NewRequest(&paddockv1.ListAgentsRequest{})); err != nil {
		t.Errorf("the admin lists agents: %v", err)
	} else if len(ag.Msg.GetAgents()) == 0 {
		t.Error("the admin lists no agents")
	}
	if st, err := admin.cluster.Status(ctx, connect.NewRequest(&paddockv1.StatusRequest{})); err != nil {
		t.Errorf("the admin's status: %v", err)
	} else if st.Msg.GetStore() == "" || !st.Msg.GetAdmin() {
		t.Errorf("the admin's status: store %q, admin %v", st.Msg.GetStore(), st.Msg.GetAdmin())
	}

	// A's watch shows only A's tasks; naming B is refused.
	wctx, stopWatch := context.WithTimeout(ctx, time.Minute)
	watchReq := func(m *paddockv1.WatchTasksRequest) *connect.Request[paddockv1.WatchTasksRequest] {
		r := connect.NewRequest(m)
		r.Header().Set("Authorization", "Bearer "+a.token) // bearer() intercepts unary calls only
		return r
	}
	ws, err := a.tasks.WatchTasks(wctx, watchReq(&paddockv1.WatchTasksRequest{}))
	if err != nil || !ws.Receive() {
		t.Fatalf("A's watch: %v %v", err, ws.Err())
	}
	for _, tk := range ws.Msg().GetSnapshot() {
		if tk.GetSpec().GetTenant() != "tenant-a" {
			t.Errorf("A's watch showed task %s of tenant %s", tk.GetId(), tk.GetSpec().GetTenant())
		}
	}
	ws.Close()
	ws, err = a.tasks.WatchTasks(wctx, watchReq(&paddockv1.WatchTasksRequest{Tenant: "tenant-b"}))
	if err == nil && ws.Receive() {
		t.Errorf("A's watch of tenant-b sent %v", ws.Msg())
	} else if err == nil {
		err = ws.Err()
	}
	wantErrCode(t, "A watches tenant-b", err, connect.CodePermissionDenied, "tenant:")
	stopWatch()

	// A's feed carried A's tasks and none of B's.
	stopFeed()
	sawMine := false
	for line := range feedLines {
		for _, id := range []string{running, failed, failedB, forB} {
			if strings.Contains(line, id) {
				t.Errorf("A's console feed carried B's task %s: %s", id, line)
			}
		}
		sawMine = sawMine || strings.Contains(line, mine)
	}
	if !sawMine {
		t.Error("A's console feed never carried A's own task")
	}

	// A pipeline's stages take the token's tenant too, and may not name another.
	_, err = a.tasks.SubmitPipeline(ctx, connect.NewRequest(&paddockv1.SubmitPipelineRequest{Stages: []*paddockv1.Stage{
		{Name: "one", Task: &paddockv1.TaskSpec{Type: "test.echo", Tenant: "tenant-b"}}}}))
	wantErrCode(t, "A's pipeline stage naming tenant-b", err, connect.CodePermissionDenied, "tenant")
	pr, err := a.tasks.SubmitPipeline(ctx, connect.NewRequest(&paddockv1.SubmitPipelineRequest{Stages: []*paddockv1.Stage{
		{Name: "one", Task: &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("a-pipe")}},
		{Name: "two", Task: &paddockv1.TaskSpec{Type: "test.echo", InputTasks: map[string]string{"in": "@stage:one"}}}}}))
	if err != nil {
		t.Fatalf("A's own pipeline: %v", err)
	}
	for _, st := range pr.Msg.GetStages() {
		if tn := st.GetTask().GetSpec().GetTenant(); tn != "tenant-a" {
			t.Errorf("A's pipeline stage %s has tenant %q; want tenant-a (from the token)", st.GetName(), tn)
		}
	}
	waitState(t, a, pr.Msg.GetStages()[0].GetTask().GetId(), paddockv1.State_STATE_SUCCEEDED)

	// Revoke: refused on the very next call.
	tl, err := admin.tenants.ListTokens(ctx, connect.NewRequest(&paddockv1.ListTokensRequest{}))
	if err != nil || len(tl.Msg.GetTokens()) != 2 {
		t.Fatalf("ListTokens = %v, %v", tl, err)
	}
	idA := tl.Msg.GetTokens()[0].GetId()
	if tl.Msg.GetTokens()[0].GetTenant() != "tenant-a" {
		t.Fatalf("first token is %v; want tenant-a's", tl.Msg.GetTokens()[0])
	}
	if _, err := a.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: mine})); err != nil {
		t.Fatalf("A gets its task before the revoke: %v", err)
	}
	if _, err := admin.tenants.RevokeToken(ctx, connect.NewRequest(&paddockv1.RevokeTokenRequest{Id: idA})); err != nil {
		t.Fatal(err)
	}
	_, err = a.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: mine}))
	wantErrCode(t, "A's call right after its token was revoked", err, connect.CodeUnauthenticated, "revoked")
	_, err = a.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.echo"}}))
	wantErrCode(t, "A submits after the revoke", err, connect.CodeUnauthenticated, "revoked")
	if _, err := b.tasks.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: running})); err != nil {
		t.Fatalf("B's token stopped working when A's was revoked: %v", err)
	}
	// No token in the store is kept in clear.
	toks, _ := ts.srv.Store().Tokens(ctx)
	for _, tk := range toks {
		if tk.Hash == a.token || tk.Hash == b.token || tk.Hash != tenant.Hash(a.token) && tk.Hash != tenant.Hash(b.token) {
			t.Errorf("stored token %s: hash %q is not the SHA-256 of a token made", tk.ID, tk.Hash)
		}
	}
}

// TestTenantFairShare: tenants of weights 1 and 3 compete for the 4 slots of one real
// agent; tenant light submits all its tasks first, so a first-come dispatcher would
// give it every slot. Sampled while both have tasks queued, heavy holds about 3 of 4.
func TestTenantFairShare(t *testing.T) {
	cfg := tenantConfig()
	cfg.Tenants = tenant.Config{"light": {Weight: 1}, "heavy": {Weight: 3}}
	ts := startServer(t, cfg)
	admin := clientsFor(ts, adminToken)
	light := clientsFor(ts, newToken(t, admin, "light"))
	heavy := clientsFor(ts, newToken(t, admin, "heavy"))
	spec := func(int) *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("300ms")}
	}
	submitMany(t, light.tasks, 60, spec)
	submitMany(t, heavy.tasks, 60, spec)
	startTenantAgent(t, ts, "fair-1", 4, 0)

	st, ctx := ts.srv.Store(), context.Background()
	count := func(tn string, states ...store.State) int64 {
		var n int64
		for _, s := range states {
			c, err := st.CountTenant(ctx, tn, s)
			if err != nil {
				t.Fatal(err)
			}
			n += c
		}
		return n
	}
	var sumLight, sumHeavy, samples int64
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if count("light", store.Queued) == 0 || count("heavy", store.Queued) == 0 {
			break
		}
		// The two counts are two queries: a light task that ends and a heavy one leased
		// between them would read as 5. A sample counts only when a second reading of both
		// agrees with the first, so no change fell between them.
		l, h := count("light", store.Leased, store.Running), count("heavy", store.Leased, store.Running)
		l2, h2 := count("light", store.Leased, store.Running), count("heavy", store.Leased, store.Running)
		if l != l2 || h != h2 {
			continue
		}
		if l+h > 4 {
			t.Fatalf("the tenants run %d tasks on an agent with 4 slots for the type", l+h)
		}
		if l+h == 4 { // all 4 slots taken (not while the agent's allocator grows the type's share, nor between a report and the next lease)
			sumLight, sumHeavy, samples = sumLight+l, sumHeavy+h, samples+1
		}
		time.Sleep(25 * time.Millisecond)
	}
	if samples < 20 {
		t.Fatalf("only %d samples while both tenants competed: the agent ran too little", samples)
	}
	avgL, avgH := float64(sumLight)/float64(samples), float64(sumHeavy)/float64(samples)
	share := avgH / (avgL + avgH)
	t.Logf("%d samples: light runs %.2f, heavy %.2f on average; heavy's share %.2f (weights 1:3 → 0.75)", samples, avgL, avgH, share)
	if share < 0.65 || share > 0.85 {
		t.Errorf("heavy's share of the slots = %.2f; want 0.75 ± 0.10 (light %.2f, heavy %.2f slots on average)", share, avgL, avgH)
	}
	// No prices configured: usage comes without cost, with a plain note.
	waitAllTerminal(t, st, 3*time.Minute)
	u, err := admin.tenants.Usage(ctx, connect.NewRequest(&paddockv1.UsageRequest{}))
	if err != nil {
		t.Fatalf("usage without prices: %v", err)
	}
	if !strings.Contains(u.Msg.GetNote(), "server.prices.cpu_second") || len(u.Msg.GetTenants()) != 2 {
		t.Errorf("usage without prices: note %q, %d tenants; want a note naming the prices and 2 tenants", u.Msg.GetNote(), len(u.Msg.GetTenants()))
	}
	for _, tu := range u.Msg.GetTenants() {
		if tu.GetHasCost() || tu.GetAttempts() != 60 {
			t.Errorf("usage of %s = %v; want 60 attempts and no cost", tu.GetTenant(), tu)
		}
	}
}

// TestTenantMaxQueued: a submit past a tenant's max_queued is refused naming the limit.
func TestTenantMaxQueued(t *testing.T) {
	cfg := tenantConfig()
	cfg.Tenants = tenant.Config{"small": {MaxQueued: 3}}
	ts := startServer(t, cfg) // no agent: tasks stay queued
	admin := clientsFor(ts, adminToken)
	small := clientsFor(ts, newToken(t, admin, "small"))
	other := clientsFor(ts, newToken(t, admin, "other"))
	for i := 0; i < 3; i++ {
		submitAs(t, small, &paddockv1.TaskSpec{Type: "test.echo"})
	}
	_, err := small.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.echo"}}))
	wantErrCode(t, "a 4th queued task of a tenant limited to 3", err, connect.CodeResourceExhausted, "tenants.small.max_queued")
	_, err = small.tasks.SubmitBatch(context.Background(), connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: []*paddockv1.TaskSpec{{Type: "test.echo"}}}))
	wantErrCode(t, "a batch past the limit", err, connect.CodeResourceExhausted, "tenants.small.max_queued")
	submitAs(t, other, &paddockv1.TaskSpec{Type: "test.echo"}) // other tenants are not limited
}

// TestTenantConfigErrors: bad tenant settings and prices are refused at start, naming
// the key.
func TestTenantConfigErrors(t *testing.T) {
	neg := -0.5
	tests := []struct {
		name string
		edit func(*sched.Config)
		want string
	}{
		{"negative max_running", func(c *sched.Config) { c.Tenants = tenant.Config{"a": {MaxRunning: -1}} }, "tenants.a.max_running"},
		{"negative max_queued", func(c *sched.Config) { c.Tenants = tenant.Config{"a": {MaxQueued: -2}} }, "tenants.a.max_queued"},
		{"negative weight", func(c *sched.Config) { c.Tenants = tenant.Config{"a": {Weight: -1}} }, "tenants.a.weight"},
		{"bad tenant name", func(c *sched.Config) { c.Tenants = tenant.Config{"a b": {}} }, "tenants.a b"},
		{"negative price", func(c *sched.Config) { c.Prices.GiBMoved = &neg }, "server.prices.gib_moved"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tenantConfig()
			tc.edit(&c)
			_, err := sched.New(c, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestUsageKnownWorkload: the usage of tasks with known sleeps and CPU burns, run by a
// real agent offering a known memory, matches what the test computes within 10 %;
// with prices, the cost is theirs; the /metrics counters by tenant agree.
func TestUsageKnownWorkload(t *testing.T) {
	cfg := tenantConfig()
	one, two, three := 0.01, 0.002, 0.5
	cfg.Prices = tenant.Prices{CPUSecond: &one, GiBSecond: &two, GiBMoved: &three}
	ts := startServer(t, cfg)
	const memory = 512 << 20
	startTenantAgent(t, ts, "usage-1", 4, memory)
	admin := clientsFor(ts, adminToken)
	sleeper := clientsFor(ts, newToken(t, admin, "sleeper"))
	burner := clientsFor(ts, newToken(t, admin, "burner"))
	since := time.Now()

	// burner: 3 burns of 800 ms CPU, one at a time (the handler's CPU is the process's
	// over the call: calls that overlap would share it).
	for i := 0; i < 3; i++ {
		id := submitAs(t, burner, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("cpu:800ms")})
		waitState(t, burner, id, paddockv1.State_STATE_SUCCEEDED)
	}
	// sleeper, then: 4 sleeps of 1.5 s, at once (wall and memory × wall are per task).
	var wg sync.WaitGroup
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, submitAs(t, sleeper, &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("1500ms")}))
	}
	for _, id := range ids {
		wg.Add(1)
		go func(id string) { defer wg.Done(); waitState(t, sleeper, id, paddockv1.State_STATE_SUCCEEDED) }(id)
	}
	wg.Wait()

	ctx := context.Background()
	u, err := admin.tenants.Usage(ctx, connect.NewRequest(&paddockv1.UsageRequest{SinceUnixMs: since.UnixMilli()}))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]*paddockv1.TenantUsage{}
	for _, tu := range u.Msg.GetTenants() {
		by[tu.GetTenant()] = tu
	}
	s, b := by["sleeper"], by["burner"]
	if s == nil || b == nil || s.GetAttempts() != 4 || b.GetAttempts() != 3 {
		t.Fatalf("usage = %v; want sleeper with 4 attempts and burner with 3", u.Msg.GetTenants())
	}
	within := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 0.10*want {
			t.Errorf("%s = %.3f; want %.3f ± 10%%", what, got, want)
		}
	}
	within("sleeper wall seconds", s.GetWallSeconds(), 4*1.5)
	within("sleeper GiB-seconds", s.GetGibSeconds(), 4*1.5*0.5)
	within("burner CPU seconds", b.GetCpuSeconds(), 3*0.8)
	if s.GetCpuSeconds() > 0.1*b.GetCpuSeconds() {
		t.Errorf("sleeper used %.3f CPU seconds sleeping; want next to none", s.GetCpuSeconds())
	}
	if u.Msg.GetNote() != "" || !b.GetHasCost() {
		t.Fatalf("with every price set: note %q, has_cost %v", u.Msg.GetNote(), b.GetHasCost())
	}
	wantCost := b.GetCpuSeconds()*one + b.GetGibSeconds()*two + float64(b.GetBytesIn()+b.GetBytesOut())/(1<<30)*three
	if math.Abs(b.GetCost()-wantCost) > 1e-9 {
		t.Errorf("burner's cost = %v; want %v", b.GetCost(), wantCost)
	}
	// Each attempt says where it ran and on how much memory.
	tk := waitState(t, sleeper, ids[0], paddockv1.State_STATE_SUCCEEDED)
	if at := tk.GetAttempts(); len(at) != 1 || at[0].GetUsage().GetHost() != "testhost" || at[0].GetUsage().GetMemoryBytes() != memory {
		t.Errorf("attempt usage = %v; want host testhost and memory %d", at, memory)
	}
	// A tenant sees its own usage only.
	mine, err := burner.tenants.Usage(ctx, connect.NewRequest(&paddockv1.UsageRequest{SinceUnixMs: since.UnixMilli()}))
	if err != nil || len(mine.Msg.GetTenants()) != 1 || mine.Msg.GetTenants()[0].GetTenant() != "burner" {
		t.Errorf("burner's own usage = %v, %v", mine, err)
	}
	_, err = burner.tenants.Usage(ctx, connect.NewRequest(&paddockv1.UsageRequest{Tenant: "sleeper"}))
	wantErrCode(t, "burner asks for sleeper's usage", err, connect.CodePermissionDenied, "tenant:")
	// The Prometheus counters by tenant.
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var cpu float64
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `paddock_tenant_cpu_seconds_total{tenant="burner"} `) {
			if _, err := fmt.Sscan(strings.Fields(line)[1], &cpu); err != nil {
				t.Fatal(err)
			}
		}
	}
	within("paddock_tenant_cpu_seconds_total{tenant=burner}", cpu, b.GetCpuSeconds())
	for _, m := range []string{`paddock_tenant_attempts_total{tenant="sleeper"} 4`, `paddock_tenant_bytes_total{direction="in",tenant="burner"}`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}
