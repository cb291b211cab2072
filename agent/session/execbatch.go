package session

import (
	"context"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// Batched execution: the tasks of one ServerBatch that are ready at once (admitted,
// no input blobs to wait for) and of the same type go to an Executor that implements
// BatchExecutor together, up to maxExecBatch per call: RunnerExecutor sends them to
// the handler in one HandleBatch call (plugins/runner.ExecuteBatch) instead of one
// Handle call each. Nothing waits for company: a lone task, and every task of an
// Assign that came alone, runs on its own as before.

// maxExecBatch bounds the tasks of one ExecuteBatch call.
const maxExecBatch = 64

// BatchCall is one task of BatchExecutor.ExecuteBatch and the context that bounds it
// (cancelled when the server cancels that task).
type BatchCall struct {
	Ctx  context.Context
	Task Task
}

// BatchExecutor is an Executor that can run several tasks in one call.
type BatchExecutor interface {
	Executor
	// ExecuteBatch runs calls as Execute would run each, and calls done once per
	// call with its index and result as soon as it has it (done may be called from
	// several goroutines at once); it returns once every call is done. ctx bounds
	// the whole batch; each call's Ctx bounds its task alone.
	ExecuteBatch(ctx context.Context, calls []BatchCall, done func(i int, res Result))
}

// settlingExecutor is a BatchExecutor that also says when the results it has given
// so far came together (RunnerExecutor: the answers of one message from the handler).
type settlingExecutor interface {
	// ExecuteBatchSettled is ExecuteBatch, and calls settled after each group of
	// results that came together, before it returns.
	ExecuteBatchSettled(ctx context.Context, calls []BatchCall, done func(i int, res Result), settled func())
}

// pending is an admitted run that has not started yet.
type pending struct {
	ctx context.Context
	r   *run
	t   Task
}

// runReady starts the runs of ready: batched by type when the executor is a
// BatchExecutor and a type has more than one, one by one otherwise. It returns the
// last of them not started, for the caller to run on its own goroutine once it has
// released s.mu (one goroutine hand-off fewer), or starts that one too and returns
// nil when the caller cannot (keep false). Caller holds s.mu.
func (s *Session) runReady(ctx context.Context, ready []pending, keep bool) (last func()) {
	start := func(fn func()) {
		if last != nil {
			s.spawn(last)
		}
		last = fn
	}
	bx, ok := s.ex.(BatchExecutor)
	if ok && len(ready) > 1 && sameType(ready) { // the common case: no map
		for g := ready; len(g) > 0; {
			n := min(len(g), maxExecBatch)
			chunk := g[:n:n]
			start(func() { s.executeBatch(ctx, bx, chunk) })
			g = g[n:]
		}
		return s.keepLast(last, keep)
	}
	byType := map[string][]pending{}
	var types []string
	for _, p := range ready {
		if !ok {
			start(func() { s.execute(p.ctx, p.r, p.t) })
			continue
		}
		if byType[p.t.Type] == nil {
			types = append(types, p.t.Type)
		}
		byType[p.t.Type] = append(byType[p.t.Type], p)
	}
	for _, typ := range types {
		g := byType[typ]
		if len(g) == 1 {
			p := g[0]
			start(func() { s.execute(p.ctx, p.r, p.t) })
			continue
		}
		for len(g) > 0 {
			n := min(len(g), maxExecBatch)
			chunk := g[:n:n]
			start(func() { s.executeBatch(ctx, bx, chunk) })
			g = g[n:]
		}
	}
	return s.keepLast(last, keep)
}

// keepLast returns last when the caller keeps it (keep), else starts it.
func (s *Session) keepLast(last func(), keep bool) func() {
	if keep || last == nil {
		return last
	}
	s.spawn(last)
	return nil
}

// sameType reports whether the runs of ready are all of one type.
func sameType(ready []pending) bool {
	for _, p := range ready[1:] {
		if p.t.Type != ready[0].t.Type {
			return false
		}
	}
	return true
}

// executeBatch runs ps through one ExecuteBatch call and reports each as it ends.
func (s *Session) executeBatch(ctx context.Context, bx BatchExecutor, ps []pending) {
	start := time.Now()
	calls := make([]BatchCall, 0, len(ps))
	runs := make([]pending, 0, len(ps))
	logs := make([]*liveLog, 0, len(ps))
	for _, p := range ps {
		if err := s.prepare(p.ctx, &p.t); err != nil {
			s.report(p.ctx, p.r, p.t, failure(err, agentv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE), start)
			continue
		}
		ll := s.startLiveLog(p.t)
		p.t.OnLog = ll.add
		calls, runs, logs = append(calls, BatchCall{Ctx: p.ctx, Task: p.t}), append(runs, p), append(logs, ll)
	}
	if len(calls) == 0 {
		return
	}
	sx, settles := bx.(settlingExecutor)
	done := func(i int, res Result) {
		p := runs[i]
		res.Log = logs[i].finish(res.Log)
		if res.Error == "" && len(res.OutputFiles) > 0 {
			// Its output files may have to travel (WriteBlob): not on the batch's goroutine.
			s.spawn(func() { s.report(p.ctx, p.r, p.t, s.finish(p.ctx, p.t, res), start) })
			return
		}
		// With settles, the slots of the runs that ended together start queued tasks
		// once they are all free (settled), in one batch.
		s.end(p.ctx, p.r, p.t, res, start, !settles)
	}
	if !settles {
		bx.ExecuteBatch(ctx, calls, done)
		return
	}
	sx.ExecuteBatchSettled(ctx, calls, done, s.kickQueued)
	s.kickQueued() // (settled was called after the last result already: this changes nothing then)
}
