package sched

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/paddockvm/paddock/api/guestabi"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob/blobhttp"
	pipe "github.com/paddockvm/paddock/sched/pipeline"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

// Limits of the client API.
const (
	MinPriority    = -100
	MaxPriority    = 100
	MaxMaxAttempts = 100
	// MaxTimeout bounds a task's timeout_ms.
	MaxTimeout = 7 * 24 * time.Hour
	// MaxInlineInputs bounds the inline inputs of a task (task.inputs).
	MaxInlineInputs = 1024
	// MaxLabels, MaxLabelKey and MaxLabelValue bound requirements.labels (bytes).
	MaxLabels     = 64
	MaxLabelKey   = 128
	MaxLabelValue = 256
	// MaxCPUMillis and MaxMemoryBytes bound requirements.cpu_millis and memory_bytes.
	MaxCPUMillis   = 1 << 20 // about a thousand cores
	MaxMemoryBytes = 1 << 50 // 1 PiB
	MaxWait        = 10 * time.Minute
	DefaultWait    = 30 * time.Second
	DefaultTenant  = "default"
)

var (
	typeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	keyRE  = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// Handler returns the client port's HTTP handler: the TaskService and ClusterService
// (connect-go: gRPC, gRPC-Web and JSON over HTTP), the blob API under /v1/blobs
// (blob/blobhttp, behind the same bearer token), /metrics and /healthz. Serve it
// with h2c for gRPC clients without TLS (Run does).
func (s *Server) Handler() http.Handler {
	opts := []connect.HandlerOption{
		connect.WithCodec(strictJSON{}),
		connect.WithInterceptors(s.authInterceptor()),
		connect.WithReadMaxBytes(s.maxRequestBytes()),
		// Small answers (most of them: a submit's id, a task without output) cost more to
		// gzip than to send; compressing them was 5 % of the server's CPU at full load.
		connect.WithCompressMinBytes(compressMinBytes),
	}
	api := &clientAPI{s: s}
	mux := http.NewServeMux()
	mux.Handle(paddockv1connect.NewTaskServiceHandler(api, opts...))
	mux.Handle(paddockv1connect.NewClusterServiceHandler(api, opts...))
	mux.Handle(paddockv1connect.NewTenantServiceHandler(api, opts...))
	bh := s.blobHandler()
	mux.Handle(blobhttp.Prefix, bh)
	mux.Handle(blobhttp.Prefix+"/", bh)
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}

// compressMinBytes is the size below which the client API answers uncompressed.
const compressMinBytes = 1024

// strictJSON is connect's JSON codec, but refusing unknown fields (naming them).
type strictJSON struct{}

func (strictJSON) Name() string { return "json" }

func (strictJSON) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", v)
	}
	return protojson.Marshal(m)
}

func (strictJSON) Unmarshal(b []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", v)
	}
	if len(b) == 0 {
		return nil
	}
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(b, m)
}

func (s *Server) authInterceptor() connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if _, ok := tenant.From(ctx); ok { // guard authenticated it
				return next(ctx, req)
			}
			p, err := s.authenticate(ctx, req.Header().Get("Authorization"))
			if err != nil {
				return nil, connect.NewError(authCode(err), err)
			}
			return next(tenant.With(ctx, p), req)
		}
	})
}

type clientAPI struct{ s *Server }

var (
	_ paddockv1connect.TaskServiceHandler    = (*clientAPI)(nil)
	_ paddockv1connect.ClusterServiceHandler = (*clientAPI)(nil)
	_ paddockv1connect.TenantServiceHandler  = (*clientAPI)(nil)
)

func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func storeErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, store.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, store.ErrConflict):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// validateSpec checks a submitted task and fills in its defaults.
func (s *Server) validateSpec(sp *paddockv1.TaskSpec) (store.Task, error) {
	if sp == nil {
		return store.Task{}, invalid("task: missing: send {\"task\": {\"type\": ...}}")
	}
	t := store.Task{Type: sp.GetType(), Payload: sp.GetPayload(), Inputs: sp.GetInputs(), Priority: int(sp.GetPriority()),
		IdempotencyKey: sp.GetIdempotencyKey()}
	switch {
	case t.Type == "":
		return t, invalid("task.type: missing: name the task type, e.g. \"checksum.sha256\"")
	case !typeRE.MatchString(t.Type):
		return t, invalid("task.type: %.140q is not a task type name (letters, digits, '.', '_', '-'; at most 128)", t.Type)
	}
	if len(t.Inputs) > MaxInlineInputs {
		return t, invalid("task.inputs: %d inputs is over the limit of %d a task: pack them into fewer", len(t.Inputs), MaxInlineInputs)
	}
	size := len(t.Payload)
	for name, b := range t.Inputs {
		// Inline inputs share one namespace with blob and task inputs (a handler reads
		// each by name, and may make it a file): the same rule for their names.
		if !guestabi.ValidName(name) {
			return t, invalid("task.inputs: name %.140q is not a valid input name: use %s", name, guestabi.NameRule)
		}
		size += len(name) + len(b)
	}
	if size > s.cfg.MaxInlineBytes {
		return t, invalid("task.payload: %d bytes (payload plus inline inputs with their names) is over the server's inline limit of %d bytes (server.max_inline_bytes)", size, s.cfg.MaxInlineBytes)
	}
	if t.Priority < MinPriority || t.Priority > MaxPriority {
		return t, invalid("task.priority: %d is out of range %d..%d", t.Priority, MinPriority, MaxPriority)
	}
	switch sp.GetClass() {
	case paddockv1.Class_CLASS_UNSPECIFIED, paddockv1.Class_CLASS_BATCH:
		t.Class = store.Batch
	case paddockv1.Class_CLASS_ONLINE:
		t.Class = store.Online
	default:
		return t, invalid("task.class: %d is not a class: use CLASS_ONLINE or CLASS_BATCH", sp.GetClass())
	}
	switch ms := sp.GetTimeoutMs(); {
	case ms < 0:
		return t, invalid("task.timeout_ms: %d is negative: give the timeout in milliseconds, or 0 for the server default", ms)
	case ms > MaxTimeout.Milliseconds():
		return t, invalid("task.timeout_ms: %d is over the longest timeout, %d (%v)", ms, MaxTimeout.Milliseconds(), MaxTimeout)
	case ms == 0:
		t.Timeout = s.cfg.DefaultTimeout
	default:
		t.Timeout = time.Duration(ms) * time.Millisecond
	}
	if _, err := s.scheduleTimeout(sp); err != nil {
		return t, err
	}
	switch n := sp.GetMaxAttempts(); {
	case n < 0 || n > MaxMaxAttempts:
		return t, invalid("task.max_attempts: %d is out of range 0..%d (0: the server default, %d)", n, MaxMaxAttempts, s.cfg.DefaultMaxAttempts)
	case n == 0:
		t.MaxAttempts = s.cfg.DefaultMaxAttempts
	default:
		t.MaxAttempts = int(n)
	}
	if t.IdempotencyKey != "" && !keyRE.MatchString(t.IdempotencyKey) {
		return t, invalid("task.idempotency_key: %.140q is malformed: use 1-128 letters, digits, '.', '_', ':' or '-'", t.IdempotencyKey)
	}
	if r := sp.GetRequirements(); r != nil {
		switch {
		case r.GetCpuMillis() < 0 || r.GetCpuMillis() > MaxCPUMillis:
			return t, invalid("task.requirements.cpu_millis: %d is out of range 0..%d", r.GetCpuMillis(), MaxCPUMillis)
		case r.GetMemoryBytes() < 0 || r.GetMemoryBytes() > MaxMemoryBytes:
			return t, invalid("task.requirements.memory_bytes: %d is out of range 0..%d", r.GetMemoryBytes(), int64(MaxMemoryBytes))
		case len(r.GetLabels()) > MaxLabels:
			return t, invalid("task.requirements.labels: %d labels is over the limit of %d", len(r.GetLabels()), MaxLabels)
		}
		for k, v := range r.GetLabels() {
			if k == "" || len(k) > MaxLabelKey || len(v) > MaxLabelValue {
				return t, invalid("task.requirements.labels[%.40q]: a label's key must have 1..%d bytes and its value at most %d", k, MaxLabelKey, MaxLabelValue)
			}
		}
		t.Requirements = store.Requirements{CPUMillis: r.GetCpuMillis(), MemoryBytes: r.GetMemoryBytes(), Labels: r.GetLabels()}
	}
	return t, nil
}

// prepareSpec is every check of a submitted spec, shared by Submit, SubmitBatch and
// SubmitPipeline: its fields and defaults (validateSpec); its tenant, from the token
// (assignTenant, before the upstreams are checked: they must be the same tenant's); its
// input blobs; its task inputs (parseInputTasks: with stages, "@stage:" references are
// returned for the pipeline to resolve); and its upstream tasks.
func (s *Server) prepareSpec(ctx context.Context, sp *paddockv1.TaskSpec, stages bool) (store.Task, map[string]pipe.Ref, error) {
	t, err := s.validateSpec(sp)
	if err != nil {
		return t, nil, err
	}
	if err := s.assignTenant(ctx, sp.GetTenant(), &t); err != nil {
		return t, nil, err
	}
	if err := s.checkInputBlobs(ctx, sp, &t); err != nil {
		return t, nil, err
	}
	refs, err := parseInputTasks(sp, &t, stages)
	if err != nil {
		return t, nil, err
	}
	return t, refs, s.checkUpstreams(ctx, t)
}

// Submit implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) Submit(ctx context.Context, req *connect.Request[paddockv1.SubmitRequest]) (*connect.Response[paddockv1.SubmitResponse], error) {
	s := api.s
	t, _, err := s.prepareSpec(ctx, req.Msg.GetTask(), false)
	if err != nil {
		return nil, err
	}
	if err := s.checkQueued(ctx, t.Tenant, 1); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	t.ID, t.CreatedAt = id.String(), time.Now()
	t.ScheduleDeadline = s.scheduleDeadline(t.CreatedAt, req.Msg.GetTask())
	stored, created, err := s.createTask(ctx, t) // leased at once when a slot is free (submitlease.go)
	if err != nil {
		return nil, storeErr(err)
	}
	if created {
		s.metrics.submits.WithLabelValues("created").Inc()
		s.submitted(stored)
	} else {
		s.metrics.submits.WithLabelValues("existing").Inc()
	}
	return connect.NewResponse(&paddockv1.SubmitResponse{Task: toProto(stored, nil), Created: created,
		Warning: s.unservedWarning(stored)}), nil
}

// MaxBatchTasks bounds the tasks of one SubmitBatch.
const MaxBatchTasks = 10000

// SubmitBatch implements paddockv1connect.TaskServiceHandler: every spec is checked
// first (a bad one fails the batch, naming tasks[i]), then all are stored in one
// durable write (store.CreateBatch), and only then is the caller answered.
func (api *clientAPI) SubmitBatch(ctx context.Context, req *connect.Request[paddockv1.SubmitBatchRequest]) (*connect.Response[paddockv1.SubmitBatchResponse], error) {
	s := api.s
	specs := req.Msg.GetTasks()
	switch {
	case len(specs) == 0:
		return nil, invalid("tasks: empty: send at least one task spec")
	case len(specs) > MaxBatchTasks:
		return nil, invalid("tasks: %d tasks is over the limit of %d a batch: split them into several batches", len(specs), MaxBatchTasks)
	}
	ts := make([]store.Task, len(specs))
	perTenant := map[string]int{}
	now := time.Now()
	for i, sp := range specs {
		t, _, err := s.prepareSpec(ctx, sp, false)
		if err != nil {
			return nil, batchErr(i, err)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		t.ID, t.CreatedAt = id.String(), now
		t.ScheduleDeadline = s.scheduleDeadline(now, sp)
		ts[i] = t
		perTenant[t.Tenant]++
	}
	for tn, n := range perTenant {
		if err := s.checkQueued(ctx, tn, n); err != nil {
			return nil, err
		}
	}
	stored, created, err := s.st.CreateBatch(ctx, ts)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &paddockv1.SubmitBatchResponse{Results: make([]*paddockv1.SubmitResponse, len(stored))}
	woken := map[string]bool{}
	for i, t := range stored {
		out.Results[i] = &paddockv1.SubmitResponse{Task: toProto(t, nil), Created: created[i]}
		if !created[i] {
			s.metrics.submits.WithLabelValues("existing").Inc()
			continue
		}
		s.metrics.submits.WithLabelValues("created").Inc()
		if t.State == store.Waiting {
			s.pipes.add(t)
			continue
		}
		if !woken[t.Type] {
			woken[t.Type] = true
			s.wakeType(t.Type)
		}
	}
	return connect.NewResponse(out), nil
}

// batchErr names the spec of a batch that err is about: "task.type: …" becomes
// "tasks[3].type: …".
func batchErr(i int, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("tasks[%d]: %w", i, err)
	}
	msg := ce.Message()
	if rest, ok := strings.CutPrefix(msg, "task"); ok {
		msg = rest
	} else {
		msg = ": " + msg
	}
	return connect.NewError(ce.Code(), fmt.Errorf("tasks[%d]%s", i, msg))
}

// Get implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) Get(ctx context.Context, req *connect.Request[paddockv1.GetRequest]) (*connect.Response[paddockv1.GetResponse], error) {
	t, err := api.s.getFull(ctx, req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	w := ""
	if t.GetState() == paddockv1.State_STATE_QUEUED {
		w = api.s.unservedWarning(store.Task{Type: t.GetSpec().GetType(), State: store.Queued})
	}
	return connect.NewResponse(&paddockv1.GetResponse{Task: t, Warning: w}), nil
}

// getFull returns task id with its attempts, if the caller may see it.
func (s *Server) getFull(ctx context.Context, id string) (*paddockv1.Task, error) {
	t, err := s.visible(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.withAttempts(ctx, t)
}

// withAttempts is t with its attempts, as the API shows a task.
func (s *Server) withAttempts(ctx context.Context, t store.Task) (*paddockv1.Task, error) {
	att, err := s.st.Attempts(ctx, t.ID)
	if err != nil {
		return nil, storeErr(err)
	}
	return toProto(t, att), nil
}

// Wait implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) Wait(ctx context.Context, req *connect.Request[paddockv1.WaitRequest]) (*connect.Response[paddockv1.WaitResponse], error) {
	s := api.s
	d := time.Duration(req.Msg.GetTimeoutMs()) * time.Millisecond
	switch {
	case d < 0:
		return nil, invalid("timeout_ms: %d is negative: give the longest wait in milliseconds, or 0 for %v", req.Msg.GetTimeoutMs(), DefaultWait)
	case d == 0:
		d = DefaultWait
	case d > MaxWait:
		return nil, invalid("timeout_ms: %d is over the longest wait, %v", req.Msg.GetTimeoutMs(), MaxWait)
	}
	id := req.Msg.GetId()
	if id == "" {
		return nil, invalid("id: missing: give the task id")
	}
	done, err := s.waitSlot(caller(ctx))
	if err != nil {
		return nil, err
	}
	defer done()
	timer := time.NewTimer(d)
	defer timer.Stop()
	poll, stopPoll := s.waitPoll() // another replica may finish the task
	defer stopPoll()
	for {
		w := s.addWaiter(id)
		t, err := s.visible(ctx, id) // its attempts are read only for the answer
		if err != nil {
			s.removeWaiter(id, w)
			return nil, err
		}
		if t.State.Terminal() {
			s.removeWaiter(id, w)
			pt, err := s.withAttempts(ctx, t)
			if err != nil {
				return nil, err
			}
			return connect.NewResponse(&paddockv1.WaitResponse{Task: pt, Terminal: true}), nil
		}
		select {
		case <-w:
			continue
		case <-poll:
			s.removeWaiter(id, w)
			continue
		case <-timer.C:
			s.removeWaiter(id, w)
			pt, err := s.withAttempts(ctx, t)
			if err != nil {
				return nil, err
			}
			return connect.NewResponse(&paddockv1.WaitResponse{Task: pt}), nil
		case <-ctx.Done():
			s.removeWaiter(id, w)
			return nil, storeErr(ctx.Err())
		}
	}
}

// Cancel implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) Cancel(ctx context.Context, req *connect.Request[paddockv1.CancelRequest]) (*connect.Response[paddockv1.CancelResponse], error) {
	if _, err := api.s.visible(ctx, req.Msg.GetId()); err != nil {
		return nil, err
	}
	t, err := api.s.Cancel(ctx, req.Msg.GetId())
	if err != nil {
		return nil, storeErr(err)
	}
	return connect.NewResponse(&paddockv1.CancelResponse{Task: toProto(t, nil)}), nil
}

// Cancel cancels task id: a queued task at once; a leased or running one is flagged and
// the cancel pushed to its agent, which stops the handler and reports it cancelled.
func (s *Server) Cancel(ctx context.Context, id string) (store.Task, error) {
	msg := "cancelled by client"
	for i := 0; ; i++ {
		t, err := s.st.Get(ctx, id)
		if err != nil || t.State.Terminal() {
			return t, err
		}
		c := store.Change{Now: time.Now()}
		if t.State == store.Queued || t.State == store.Waiting {
			c.Error = msg // ends it now; a leased one ends when its agent reports
		}
		u, err := store.Transition(t, store.EvCancel, c)
		if err != nil {
			return t, err
		}
		nt, err := s.st.Update(ctx, u)
		if errors.Is(err, store.ErrConflict) && i < 5 {
			continue
		}
		if err != nil {
			return nt, err
		}
		if nt.State.Terminal() {
			s.finished(nt)
			return nt, nil
		}
		s.cancelOnAgent(nt.AgentID, nt.ID, nt.LeaseID, msg) // an agent of another replica hears of it from there
		return nt, nil
	}
}

// List implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) List(ctx context.Context, req *connect.Request[paddockv1.ListRequest]) (*connect.Response[paddockv1.ListResponse], error) {
	m := req.Msg
	if m.GetLimit() < 0 || m.GetLimit() > 1000 {
		return nil, invalid("limit: %d is out of range 0..1000", m.GetLimit())
	}
	f := store.Filter{Type: m.GetType(), Tenant: m.GetTenant(), Limit: int(m.GetLimit()), PageToken: m.GetPageToken()}
	if p := caller(ctx); !p.Admin {
		if f.Tenant != "" && f.Tenant != p.Tenant {
			return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
				"tenant: %q is not the tenant of your token (%q): leave tenant empty to list your own tasks", f.Tenant, p.Tenant))
		}
		f.Tenant = p.Tenant
	}
	if m.GetState() != paddockv1.State_STATE_UNSPECIFIED {
		f.State = store.State(stateName(m.GetState()))
		if !f.State.Valid() {
			return nil, invalid("state: %d is not a state", m.GetState())
		}
	}
	switch m.GetClass() {
	case paddockv1.Class_CLASS_ONLINE:
		f.Class = store.Online
	case paddockv1.Class_CLASS_BATCH:
		f.Class = store.Batch
	}
	ts, next, err := api.s.st.List(ctx, f)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return nil, invalid("page_token: %v", err)
		}
		return nil, storeErr(err)
	}
	out := &paddockv1.ListResponse{NextPageToken: next}
	for _, t := range ts {
		out.Tasks = append(out.Tasks, toProto(t, nil))
	}
	return connect.NewResponse(out), nil
}

// Status implements paddockv1connect.ClusterServiceHandler.
func (api *clientAPI) Status(ctx context.Context, _ *connect.Request[paddockv1.StatusRequest]) (*connect.Response[paddockv1.StatusResponse], error) {
	s := api.s
	counts, err := s.st.Counts(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	p := caller(ctx)
	out := &paddockv1.StatusResponse{Version: s.cfg.Version, StartedAtUnixMs: s.started.UnixMilli(), Replica: s.cfg.ReplicaID,
		Admin: p.Admin, Tenant: p.Tenant}
	if p.Admin { // the store's file or server is the operator's business
		out.Store = s.st.Describe()
	}
	for _, c := range counts {
		if c.State.Terminal() {
			continue
		}
		out.Queue = append(out.Queue, &paddockv1.QueueDepth{Type: c.Type, State: stateProto(c.State), Count: c.N})
	}
	for _, a := range s.Agents() {
		if a.State == agentConnected {
			out.AgentsConnected++
		} else {
			out.AgentsLost++
		}
	}
	for _, qd := range s.QueueDelays() {
		out.QueueDelays = append(out.QueueDelays, &paddockv1.QueueDelay{Type: qd.Type, DelayMs: qd.Delay.Milliseconds(), Ready: qd.Ready})
	}
	return connect.NewResponse(out), nil
}

// ListAgents implements paddockv1connect.ClusterServiceHandler.
func (api *clientAPI) ListAgents(ctx context.Context, _ *connect.Request[paddockv1.ListAgentsRequest]) (*connect.Response[paddockv1.ListAgentsResponse], error) {
	if err := admin(ctx, "listing agents (paddock agent ls)"); err != nil {
		return nil, err
	}
	out := &paddockv1.ListAgentsResponse{}
	for _, a := range api.s.Agents() {
		pa := &paddockv1.Agent{Id: a.ID, Host: a.Host, State: a.State, Running: int32(a.Running), Labels: a.Labels,
			ConnectedAtUnixMs: unixMS(a.ConnectedAt), LastHeartbeatUnixMs: unixMS(a.LastHeartbeat), Version: a.Version,
			TotalSlots: uint32(a.TotalSlots), Replica: a.Replica}
		for _, t := range a.Types {
			pa.Types = append(pa.Types, &paddockv1.AgentType{Name: t.Name, Version: t.Version, Slots: uint32(t.Slots), Running: uint32(t.Running),
				MinSlots: uint32(t.MinSlots), TolerableDelayMs: t.TolerableDelay.Milliseconds(), DelayMs: t.Delay.Milliseconds()})
		}
		out.Agents = append(out.Agents, pa)
	}
	return connect.NewResponse(out), nil
}

func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

var stateProtos = map[store.State]paddockv1.State{
	store.Waiting: paddockv1.State_STATE_WAITING, store.Queued: paddockv1.State_STATE_QUEUED, store.Leased: paddockv1.State_STATE_LEASED,
	store.Running: paddockv1.State_STATE_RUNNING, store.Succeeded: paddockv1.State_STATE_SUCCEEDED,
	store.Failed: paddockv1.State_STATE_FAILED, store.Cancelled: paddockv1.State_STATE_CANCELLED,
	store.Dead: paddockv1.State_STATE_DEAD,
}

func stateProto(s store.State) paddockv1.State { return stateProtos[s] }

func stateName(p paddockv1.State) string {
	for s, v := range stateProtos {
		if v == p {
			return string(s)
		}
	}
	return ""
}

func toProto(t store.Task, att []store.Attempt) *paddockv1.Task {
	cl := paddockv1.Class_CLASS_BATCH
	if t.Class == store.Online {
		cl = paddockv1.Class_CLASS_ONLINE
	}
	p := &paddockv1.Task{
		Id: t.ID, State: stateProto(t.State), Attempt: int32(t.Attempt), LeaseId: t.LeaseID, AgentId: t.AgentID,
		Output: t.Output, Outputs: t.Outputs, OutputSha256: t.OutputSHA256, OutputBlobs: apiRefs(t.OutputBlobs), Error: t.Error, CancelRequested: t.CancelRequested,
		CreatedAtUnixMs: unixMS(t.CreatedAt), UpdatedAtUnixMs: unixMS(t.UpdatedAt), FinishedAtUnixMs: unixMS(t.FinishedAt),
		Spec: &paddockv1.TaskSpec{
			Type: t.Type, Payload: t.Payload, Inputs: t.Inputs, Priority: int32(t.Priority), Class: cl,
			TimeoutMs: t.Timeout.Milliseconds(), MaxAttempts: int32(t.MaxAttempts), IdempotencyKey: t.IdempotencyKey, Tenant: t.Tenant,
			InputBlobs: apiRefs(t.InputBlobs), InputTasks: upstreamSpecs(t),
		},
	}
	if !t.ScheduleDeadline.IsZero() {
		p.Spec.ScheduleToStartTimeoutMs = t.ScheduleDeadline.Sub(t.CreatedAt).Milliseconds()
	}
	if r := t.Requirements; r.CPUMillis != 0 || r.MemoryBytes != 0 || len(r.Labels) > 0 {
		p.Spec.Requirements = &paddockv1.Requirements{CpuMillis: r.CPUMillis, MemoryBytes: r.MemoryBytes, Labels: r.Labels}
	}
	for _, a := range att {
		p.Attempts = append(p.Attempts, &paddockv1.Attempt{Number: int32(a.Number), LeaseId: a.LeaseID, AgentId: a.AgentID,
			State: stateProto(a.State), Error: a.Error, Retryable: a.Retryable, FailureKind: kindProto(a.FailureKind),
			Usage: &paddockv1.Usage{WallMs: a.Usage.Wall.Milliseconds(), CpuMs: a.Usage.CPU.Milliseconds(), MemoryBytes: a.Usage.MemoryBytes,
				BytesIn: a.Usage.BytesIn, BytesOut: a.Usage.BytesOut, Host: a.Usage.Host},
			LeasedAtUnixMs: unixMS(a.LeasedAt), FinishedAtUnixMs: unixMS(a.FinishedAt)})
	}
	if n := len(att); n > 0 && t.State != store.Succeeded {
		p.FailureKind = kindProto(att[n-1].FailureKind)
	} else if n == 0 && t.State == store.Failed {
		k := t.FailureKind // schedule_timeout or upstream_failed
		if k == "" {
			k = store.ScheduleTimeout // a row from before migration 00016: the one way then
		}
		p.FailureKind = kindProto(k)
	}
	return p
}
