package sched

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// Why is this task still queued? Explain answers from the server's own view: the
// agents connected now (their types, slots and capacity, as dispatch sees them), the
// host pools (their task types, state and why they do not scale up), and the store
// (the task's backoff, the ready tasks ahead of it).

// explainAhead bounds how many ready tasks of a type Explain reads to find a task's
// place in the queue.
const explainAhead = 1000

// Explain says why task id is where it is: reasons, most important first.
func (s *Server) Explain(ctx context.Context, id string, now time.Time) (*paddockv1.ExplainResponse, error) {
	t, err := s.st.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("explaining task %s: %w", id, err)
	}
	out := &paddockv1.ExplainResponse{State: stateProto(t.State)}
	if t.State != store.Queued {
		out.Reasons = []*paddockv1.Reason{notQueued(t)}
		return out, nil
	}
	if t.NotBefore.After(now) {
		out.Reasons = append(out.Reasons, &paddockv1.Reason{Kind: paddockv1.Reason_KIND_BACKOFF, UntilUnixMs: t.NotBefore.UnixMilli(),
			Message: fmt.Sprintf("waiting out the retry backoff after attempt %d until %s (%v from now)",
				t.Attempt, t.NotBefore.UTC().Format(time.RFC3339), t.NotBefore.Sub(now).Round(time.Millisecond))})
	}
	r := s.placement(&t)
	if r.Kind == paddockv1.Reason_KIND_READY {
		ahead, err := s.ahead(ctx, t, now)
		if err != nil {
			return nil, fmt.Errorf("explaining task %s: %w", id, err)
		}
		if ahead > 0 {
			r = &paddockv1.Reason{Kind: paddockv1.Reason_KIND_QUEUED_BEHIND, Ahead: ahead,
				Message: fmt.Sprintf("%d ready tasks of type %s go first (higher priority or submitted earlier); %s", ahead, t.Type, r.Message)}
		}
	}
	if r.Kind != paddockv1.Reason_KIND_READY || len(out.Reasons) == 0 {
		out.Reasons = append(out.Reasons, r)
	}
	return out, nil
}

// notQueued describes a task that is not queued.
func notQueued(t store.Task) *paddockv1.Reason {
	var msg string
	switch t.State {
	case store.Leased:
		msg = fmt.Sprintf("leased to agent %s (attempt %d) at %s; waiting for the agent to acknowledge it", t.AgentID, t.Attempt, t.LeasedAt.UTC().Format(time.RFC3339))
	case store.Running:
		msg = fmt.Sprintf("running on agent %s (attempt %d) since %s", t.AgentID, t.Attempt, t.StartedAt.UTC().Format(time.RFC3339))
	case store.Waiting:
		var ups []string
		for _, name := range sortedKeys(t.Upstreams) {
			ups = append(ups, fmt.Sprintf("%s <- task %s", name, t.Upstreams[name].TaskID))
		}
		msg = "waiting for its upstream tasks to succeed (" + strings.Join(ups, ", ") + "); it is queued then, or fails if one ends otherwise"
	default:
		msg = fmt.Sprintf("ended %s at %s (attempts: %d)", t.State, t.FinishedAt.UTC().Format(time.RFC3339), t.Attempt)
		if t.Error != "" {
			msg += ": " + t.Error
		}
	}
	return &paddockv1.Reason{Kind: paddockv1.Reason_KIND_NOT_QUEUED, Message: msg}
}

// placement says whether a connected agent could take t now, and if not, why not.
func (s *Server) placement(t *store.Task) *paddockv1.Reason {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	var serving, meeting []*agent
	unmet := map[string][]string{} // requirement -> agents serving the type that lack it
	for _, a := range s.agents.byID {
		if a.state != agentConnected || a.gone || a.types[t.Type] == nil {
			continue
		}
		serving = append(serving, a)
		if u := a.unmet(t.Requirements); u != "" {
			unmet[u] = append(unmet[u], a.id)
			continue
		}
		meeting = append(meeting, a)
	}
	switch {
	case len(serving) == 0:
		return s.noAgent(t.Type)
	case len(meeting) == 0:
		return requirementsReason(t, serving, unmet)
	}
	var slots, running, free int
	var busy []string
	for _, a := range meeting {
		ts := a.types[t.Type]
		slots += ts.slots
		running += ts.running
		if a.fits(t) {
			free += a.free(t.Type)
			continue
		}
		busy = append(busy, a.id+" ("+a.busyReason(t.Type)+")")
	}
	if free == 0 {
		sort.Strings(busy)
		return &paddockv1.Reason{Kind: paddockv1.Reason_KIND_NO_CAPACITY,
			Message: fmt.Sprintf("no free slot: %d connected agents serve type %s and meet its requirements, with %d slots for it, %d in use; busy: %s",
				len(meeting), t.Type, slots, running, strings.Join(busy, ", "))}
	}
	return &paddockv1.Reason{Kind: paddockv1.Reason_KIND_READY,
		Message: fmt.Sprintf("%d free slots for type %s on %d agents: it is dispatched on the next round", free, t.Type, len(meeting))}
}

// busyReason says why a, which serves typ, takes no task of it now. Caller holds
// s.agents.mu.
func (a *agent) busyReason(typ string) string {
	ts := a.types[typ]
	switch {
	case ts.running >= ts.slots:
		return fmt.Sprintf("%d of %d slots for the type in use", ts.running, ts.slots)
	case !a.hasFreeTotal():
		return fmt.Sprintf("all %d of its total slots in use", a.total)
	case a.maxTasks > 0 && a.assigned >= a.maxTasks:
		return fmt.Sprintf("ran its pool's max_tasks_per_vm (%d)", a.maxTasks)
	case a.unacked >= MaxUnacked:
		return fmt.Sprintf("%d assignments not yet acknowledged", a.unacked)
	}
	return "busy"
}

// noAgent explains a type no connected agent serves: a pool may (its guests are
// booting, or it cannot scale up), or nothing does. Caller holds s.agents.mu.
func (s *Server) noAgent(typ string) *paddockv1.Reason {
	pools := s.hosts.poolsServing(typ)
	if len(pools) > 0 {
		sort.Strings(pools)
		return &paddockv1.Reason{Kind: paddockv1.Reason_KIND_POOL_STARTING,
			Message: fmt.Sprintf("no connected agent serves type %s yet; pools that serve it: %s", typ, strings.Join(pools, "; "))}
	}
	known := map[string]bool{}
	for _, a := range s.agents.byID {
		if a.state == agentConnected {
			for n := range a.types {
				known[n] = true
			}
		}
	}
	s.hosts.addTypes(known)
	msg := fmt.Sprintf("no connected agent and no host pool serves type %s: start an agent with a handler for it, or add it to a pool's image", typ)
	if len(known) > 0 {
		names := make([]string, 0, len(known))
		for n := range known {
			names = append(names, n)
		}
		sort.Strings(names)
		if len(names) > 20 {
			names = append(names[:20], "...")
		}
		msg += "; types served now: " + strings.Join(names, ", ")
	}
	return &paddockv1.Reason{Kind: paddockv1.Reason_KIND_NO_SERVER, Message: msg}
}

// requirementsReason explains that no agent serving t's type meets its requirements.
func requirementsReason(t *store.Task, serving []*agent, unmet map[string][]string) *paddockv1.Reason {
	keys := make([]string, 0, len(unmet))
	for k := range unmet {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	r := t.Requirements
	var parts []string
	for _, k := range keys {
		ids := unmet[k]
		sort.Strings(ids)
		want := ""
		switch {
		case k == "cpu_millis":
			want = fmt.Sprint(r.CPUMillis)
		case k == "memory_bytes":
			want = fmt.Sprint(r.MemoryBytes)
		default:
			want = fmt.Sprintf("%q", r.Labels[strings.TrimSuffix(strings.TrimPrefix(k, "labels["), "]")])
		}
		parts = append(parts, fmt.Sprintf("requirements.%s = %s not offered by %s", k, want, strings.Join(ids, ", ")))
	}
	return &paddockv1.Reason{Kind: paddockv1.Reason_KIND_REQUIREMENTS,
		Message: fmt.Sprintf("%d connected agents serve type %s but none meets its requirements: %s", len(serving), t.Type, strings.Join(parts, "; "))}
}

// ahead counts the ready tasks of t's type dispatched before t (a lower bound when
// more than explainAhead are ready).
func (s *Server) ahead(ctx context.Context, t store.Task, now time.Time) (int64, error) {
	ready, err := s.st.Ready(ctx, t.Type, now, explainAhead)
	if err != nil {
		return 0, fmt.Errorf("reading the ready tasks of type %s: %w", t.Type, err)
	}
	for i := range ready {
		if ready[i].ID == t.ID {
			return int64(i), nil
		}
	}
	return int64(len(ready)), nil
}

// Explain implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) Explain(ctx context.Context, req *connect.Request[paddockv1.ExplainRequest]) (*connect.Response[paddockv1.ExplainResponse], error) {
	if _, err := api.s.visible(ctx, req.Msg.GetId()); err != nil {
		return nil, err
	}
	out, err := api.s.Explain(ctx, req.Msg.GetId(), time.Now())
	if err != nil {
		return nil, storeErr(err)
	}
	return connect.NewResponse(out), nil
}

// Retry implements paddockv1connect.TaskServiceHandler: it submits the spec of a
// FAILED, DEAD or CANCELLED task again, as a new task without idempotency key.
func (api *clientAPI) Retry(ctx context.Context, req *connect.Request[paddockv1.RetryRequest]) (*connect.Response[paddockv1.RetryResponse], error) {
	id := req.Msg.GetId()
	if id == "" {
		return nil, invalid("id: missing: give the id of the failed, dead or cancelled task to retry")
	}
	old, err := api.s.getFull(ctx, id)
	if err != nil {
		return nil, err
	}
	switch old.GetState() {
	case paddockv1.State_STATE_FAILED, paddockv1.State_STATE_DEAD, paddockv1.State_STATE_CANCELLED:
	default:
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("task %s is %s: only a failed, dead or cancelled task can be retried", id, stateName(old.GetState())))
	}
	spec := old.GetSpec()
	spec.IdempotencyKey = ""
	for _, b := range spec.GetInputBlobs() {
		b.Size = 0 // filled in again from the blob store, which must still hold it
	}
	res, err := api.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&paddockv1.RetryResponse{Task: res.Msg.GetTask(), RetryOf: id}), nil
}
