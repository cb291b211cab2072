package sched

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/paddockvm/paddock/api/guestabi"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	pipe "github.com/paddockvm/paddock/sched/pipeline"
	"github.com/paddockvm/paddock/sched/store"
)

// Pipelines (issue 11; the logic is package sched/pipeline): a task whose spec names
// input_tasks is stored WAITING; when an upstream ends (observedStore.Update sees a
// terminal state) the pipeline loop looks at the waiting tasks that read from it and
// applies pipe.Decide with a compare-and-swap from waiting: queued with the
// upstreams' output blobs as inputs (the dispatcher then prefers the host whose cache
// holds them), or failed naming the upstream. The loop reloads the whole waiting set
// from the store at start (so a restart never leaves one stuck) and every
// pipelineRescan, which also catches upstreams that another replica finished.

// MaxInputTasks bounds a task's input_tasks; MaxStages a pipeline's stages.
const (
	MaxInputTasks = 16
	MaxStages     = 100
)

// pipelineRescan is how often the loop rereads every waiting task.
var pipelineRescan = 5 * time.Second

// pipes is the waiting set. mu guards the fields below.
type pipes struct {
	mu    sync.Mutex
	downs map[string]map[string]bool // upstream id -> ids of waiting tasks that read from it
	ended map[string]bool            // upstream ids that ended since the loop last looked
	wake  chan struct{}
}

func newPipes() *pipes {
	return &pipes{downs: map[string]map[string]bool{}, ended: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// add records that the waiting task t reads from its upstreams and has the loop look
// at it (an upstream may have ended before t was stored).
func (p *pipes) add(t store.Task) {
	p.mu.Lock()
	for _, u := range t.Upstreams {
		if p.downs[u.TaskID] == nil {
			p.downs[u.TaskID] = map[string]bool{}
		}
		p.downs[u.TaskID][t.ID] = true
		p.ended[u.TaskID] = true
	}
	p.mu.Unlock()
	p.signal()
}

// taskEnded tells the loop that task id became terminal.
func (p *pipes) taskEnded(id string) {
	p.mu.Lock()
	_, ok := p.downs[id]
	if ok {
		p.ended[id] = true
	}
	p.mu.Unlock()
	if ok {
		p.signal()
	}
}

func (p *pipes) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// take returns the waiting tasks that read from an upstream that ended, and forgets them
// (resolve adds back those that still wait).
func (p *pipes) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	set := map[string]bool{}
	for up := range p.ended {
		for d := range p.downs[up] {
			set[d] = true
		}
		delete(p.downs, up)
	}
	clear(p.ended)
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// pipelineLoop resolves waiting tasks until ctx is done.
func (s *Server) pipelineLoop(ctx context.Context) {
	if err := s.reloadWaiting(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("reloading the waiting tasks (retried every rescan)", "err", err)
	}
	t := time.NewTicker(pipelineRescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.pipes.wake:
			for _, id := range s.pipes.take() {
				s.resolveWaiting(ctx, id)
			}
		case <-t.C:
			if err := s.reloadWaiting(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("rereading the waiting tasks", "err", err)
			}
		}
	}
}

// reloadWaiting reads every waiting task from the store and resolves each.
func (s *Server) reloadWaiting(ctx context.Context) error {
	tok := ""
	for {
		ts, next, err := s.st.List(ctx, store.Filter{State: store.Waiting, Limit: 1000, PageToken: tok})
		if err != nil {
			return fmt.Errorf("listing waiting tasks: %w", err)
		}
		for i := range ts {
			s.pipes.add(ts[i])
		}
		if next == "" {
			return nil
		}
		tok = next
	}
}

// resolveWaiting looks at waiting task id and its upstreams and queues or fails it
// when they let it; a task that still waits is added back to the waiting set.
func (s *Server) resolveWaiting(ctx context.Context, id string) {
	down, err := s.st.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			s.log.Error("reading a waiting task", "task", id, "err", err)
			s.pipes.add(store.Task{ID: id, Upstreams: down.Upstreams}) // retried on the next rescan anyway
		}
		return
	}
	if down.State != store.Waiting {
		return
	}
	ups := map[string]store.Task{}
	for _, u := range down.Upstreams {
		up, err := s.st.Get(ctx, u.TaskID)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			if ctx.Err() == nil {
				s.log.Error("reading an upstream task", "task", id, "upstream", u.TaskID, "err", err)
			}
			s.pipes.add(down)
			return
		case up.Tenant != down.Tenant: // never another tenant's output (checked at submit too)
		default:
			ups[u.TaskID] = up
		}
	}
	d := pipe.Decide(down, ups, s.cfg.MaxInlineBytes)
	var u store.Update
	switch d.Action {
	case pipe.Wait:
		s.pipes.add(down)
		return
	case pipe.Queue:
		u, err = store.Transition(down, store.EvUpstreamsDone, store.Change{Now: time.Now()})
		u.InputBlobs, u.Inputs = d.Inputs, d.Inline
	case pipe.Fail:
		u, err = store.Transition(down, store.EvUpstreamLost, store.Change{Now: time.Now(), Error: d.Reason, FailureKind: store.UpstreamFailed})
	}
	if err != nil { // cannot happen: down is waiting
		s.log.Error("resolving a waiting task", "task", id, "err", err)
		return
	}
	nt, err := s.st.Update(ctx, u)
	switch {
	case errors.Is(err, store.ErrConflict):
		return // cancelled, or another replica resolved it
	case err != nil:
		if ctx.Err() == nil {
			s.log.Error("resolving a waiting task", "task", id, "err", err)
		}
		s.pipes.add(down)
		return
	}
	if nt.State == store.Queued {
		s.log.Debug("upstreams succeeded; task queued", "task", id)
		s.wakeType(nt.Type)
		return
	}
	s.log.Info("waiting task failed", "task", id, "reason", d.Reason)
	s.finished(nt)
}

// parseInputTasks reads sp.input_tasks. Stage references are returned by input name
// in stages when allowStages is set (SubmitPipeline), refused otherwise.
func parseInputTasks(sp *paddockv1.TaskSpec, t *store.Task, allowStages bool) (stages map[string]pipe.Ref, err error) {
	in := sp.GetInputTasks()
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > MaxInputTasks {
		return nil, invalid("task.input_tasks: %d inputs is over the limit of %d a task", len(in), MaxInputTasks)
	}
	t.Upstreams = map[string]store.Upstream{}
	for _, name := range sortedKeys(in) {
		if !guestabi.ValidName(name) {
			return nil, invalid("task.input_tasks: name %.140q is not a valid input name: use %s", name, guestabi.NameRule)
		}
		if _, dup := t.Inputs[name]; dup {
			return nil, invalid("task.input_tasks[%q]: the name is also in task.inputs: give each input one source", name)
		}
		if _, dup := sp.GetInputBlobs()[name]; dup {
			return nil, invalid("task.input_tasks[%q]: the name is also in task.input_blobs: give each input one source", name)
		}
		r, err := pipe.ParseRef(in[name])
		if err != nil {
			return nil, invalid("task.input_tasks[%q]: %v", name, err)
		}
		if r.Kind == pipe.KindStage {
			if !allowStages {
				return nil, invalid("task.input_tasks[%q]: %s names a pipeline stage: submit stages with SubmitPipeline (paddock task submit -f), or name a task with @task:ID", name, r)
			}
			if stages == nil {
				stages = map[string]pipe.Ref{}
			}
			stages[name] = r
			continue
		}
		t.Upstreams[name] = store.Upstream{TaskID: r.Name, Output: r.Output}
	}
	return stages, nil
}

// checkUpstreams checks that t's upstream tasks exist, and that a succeeded one has the
// output named (one that already ended otherwise is accepted: t then fails at once,
// naming it, as it would had it ended later).
func (s *Server) checkUpstreams(ctx context.Context, t store.Task) error {
	for _, name := range sortedKeys(t.Upstreams) {
		u := t.Upstreams[name]
		up, err := s.st.Get(ctx, u.TaskID)
		if err == nil && up.Tenant != t.Tenant {
			err = store.ErrNotFound // another tenant's output is not an input: as if it did not exist
		}
		if errors.Is(err, store.ErrNotFound) {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("task.input_tasks[%q]: upstream task %s does not exist (check the id with paddock task ls)", name, u.TaskID))
		}
		if err != nil {
			return storeErr(err)
		}
		if up.State == store.Succeeded {
			if _, err := pipe.Output(up, pipe.Ref{Kind: pipe.KindTask, Name: u.TaskID, Output: u.Output}); err != nil {
				return invalid("task.input_tasks[%q]: %v", name, err)
			}
		}
	}
	return nil
}

// upstreamSpecs renders t's upstreams as input_tasks references.
func upstreamSpecs(t store.Task) map[string]string {
	if len(t.Upstreams) == 0 {
		return nil
	}
	out := make(map[string]string, len(t.Upstreams))
	for n, u := range t.Upstreams {
		out[n] = pipe.Ref{Kind: pipe.KindTask, Name: u.TaskID, Output: u.Output}.String()
	}
	return out
}

// SubmitPipeline implements paddockv1connect.TaskServiceHandler: the stages are checked
// (each spec, the DAG), given ids in dependency order, and stored in one durable write.
func (api *clientAPI) SubmitPipeline(ctx context.Context, req *connect.Request[paddockv1.SubmitPipelineRequest]) (*connect.Response[paddockv1.SubmitPipelineResponse], error) {
	s := api.s
	sts := req.Msg.GetStages()
	switch {
	case len(sts) == 0:
		return nil, invalid("stages: empty: send at least one stage")
	case len(sts) > MaxStages:
		return nil, invalid("stages: %d stages is over the limit of %d a pipeline", len(sts), MaxStages)
	}
	ts := make([]store.Task, len(sts))
	perTenant := map[string]int{}
	refs := make([]map[string]pipe.Ref, len(sts))
	dag := make([]pipe.Stage, len(sts))
	for i, st := range sts {
		t, r, err := s.prepareSpec(ctx, st.GetTask(), true)
		refs[i] = r
		if err != nil {
			return nil, stageErr(i, st.GetName(), err)
		}
		ts[i] = t
		perTenant[t.Tenant]++
		dag[i].Name = st.GetName()
		for _, r := range refs[i] {
			dag[i].Deps = append(dag[i].Deps, r.Name)
		}
	}
	order, err := pipe.Order(dag)
	if err != nil {
		return nil, invalid("stages: %v", err)
	}
	for tn, n := range perTenant {
		if err := s.checkQueued(ctx, tn, n); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	ids := map[string]string{}
	batch := make([]store.Task, 0, len(ts))
	for _, i := range order {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		t := ts[i]
		t.ID, t.CreatedAt = id.String(), now
		t.ScheduleDeadline = s.scheduleDeadline(now, sts[i].GetTask())
		ids[dag[i].Name] = t.ID
		for name, r := range refs[i] {
			t.Upstreams[name] = store.Upstream{TaskID: ids[r.Name], Output: r.Output}
		}
		if len(t.Upstreams) == 0 {
			t.Upstreams = nil
		}
		batch = append(batch, t)
	}
	stored, created, err := s.st.CreateBatch(ctx, batch)
	if err != nil {
		return nil, storeErr(err)
	}
	byName := map[string]*paddockv1.StageResult{}
	for k, t := range stored {
		name := dag[order[k]].Name
		byName[name] = &paddockv1.StageResult{Name: name, Task: toProto(t, nil)}
		if !created[k] {
			s.metrics.submits.WithLabelValues("existing").Inc()
			continue
		}
		s.metrics.submits.WithLabelValues("created").Inc()
		s.submitted(t)
	}
	out := &paddockv1.SubmitPipelineResponse{}
	for _, st := range sts {
		out.Stages = append(out.Stages, byName[st.GetName()])
	}
	return connect.NewResponse(out), nil
}

// submitted hands a newly stored task to the dispatcher, or to the waiting set.
func (s *Server) submitted(t store.Task) {
	switch t.State {
	case store.Waiting:
		s.pipes.add(t)
	case store.Queued:
		s.wakeType(t.Type)
	}
}

// stageErr names the stage of a pipeline that err is about: "task.type: …" becomes
// "stages[1] (checksum).task.type: …".
func stageErr(i int, name string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("stages[%d] (%s): %w", i, name, err)
	}
	return connect.NewError(ce.Code(), fmt.Errorf("stages[%d] (%s).%s", i, name, ce.Message()))
}
