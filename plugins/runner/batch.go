package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// MaxBatch is the most tasks ExecuteBatch sends in one HandleBatch call; it splits
// larger groups.
const MaxBatch = 256

// Call is one task of ExecuteBatch and the context that bounds it.
type Call struct {
	// Ctx bounds the task (cancelling it cancels the task alone); nil: the batch's ctx.
	Ctx  context.Context
	Task Task
}

// ExecuteBatch runs calls as Execute would run each of them, but sends the tasks
// served by one handler together, in HandleBatch calls of up to MaxBatch tasks: one
// gRPC call for many tasks instead of one each. It calls done once for each call,
// with the call's index and its result, as soon as that result is known (the
// handler streams each task's answer back as soon as that task is done), and
// returns once every call is done. done may be called from several goroutines at
// once and must not block.
//
// Each task keeps Execute's guarantees: its deadline (Task.Deadline, Call.Ctx) or a
// cancel of its Call.Ctx gives it a timeout or cancelled result at once, and the
// runner tells the handler (CancelCall) and kills it if the task is still running
// KillGrace later; a handler that crashes gives every task of the batch still
// running a "handler crashed" result; each result has its own error, usage and
// logs. Usage.Wall is the time from the start of the batch to the task's result.
//
// A handler that does not implement HandleBatch (built with an older plugins/sdk,
// or with go-plugin alone) answers Unimplemented: the runner then remembers that
// for the handler's process and runs each task with its own Handle call, all at
// once.
func (r *Runner) ExecuteBatch(ctx context.Context, calls []Call, done func(i int, res Result)) {
	r.ExecuteBatchSettled(ctx, calls, done, nil)
}

// ExecuteBatchSettled is ExecuteBatch that also calls settled (when not nil) after
// each group of results that came together: the answers of one message from the
// handler, or a result that came alone (a task's timeout or cancel, a failure). Every
// call of done is followed by a call of settled on the same goroutine, so a caller may
// hold back the work each result would start (the agent starts the tasks waiting for
// the slots the results free) and do it once per group. settled may be called from
// several goroutines at once and must not block.
func (r *Runner) ExecuteBatchSettled(ctx context.Context, calls []Call, done func(i int, res Result), settled func()) {
	if settled == nil {
		settled = func() {}
	}
	start := time.Now()
	groups := map[*handler][]int{}
	var order []*handler
	for i, c := range calls {
		h := r.byType[c.Task.Type]
		if h == nil {
			res := r.unknownType(c.Task.Type)
			res.Usage.Wall = time.Since(start)
			done(i, res)
			settled()
			continue
		}
		if groups[h] == nil {
			order = append(order, h)
		}
		groups[h] = append(groups[h], i)
	}
	var chunks [][]int
	var hs []*handler
	for _, h := range order {
		for idx := groups[h]; len(idx) > 0; {
			n := min(len(idx), MaxBatch)
			chunks, hs = append(chunks, idx[:n:n]), append(hs, h)
			idx = idx[n:]
		}
	}
	var wg sync.WaitGroup
	for k := range chunks {
		if k == len(chunks)-1 {
			r.batch(ctx, hs[k], start, calls, chunks[k], done, settled)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.batch(ctx, hs[k], start, calls, chunks[k], done, settled)
		}()
	}
	wg.Wait()
}

// batchItem is one task of a HandleBatch call.
type batchItem struct {
	i      int // index in ExecuteBatch's calls
	t      Task
	ctx    context.Context
	callID string
	cl     *callLog
	stop   func() bool // stops the AfterFunc that ends the task when ctx does
	done   atomic.Bool
}

// batchRun is the state of one HandleBatch call shared by its goroutines.
type batchRun struct {
	r     *Runner
	h     *handler
	start time.Time
	done  func(int, Result)
	// settled follows the results that came together: after each message's answers
	// in receive, after each other result in finish.
	settled func()
	left    atomic.Int64
	cancel  context.CancelFunc // ends the call once every task is done
	// early: a task got its result other than from the handler's answer (its context
	// ended, or the call failed): the handler may still run it.
	early atomic.Bool
}

// finish gives it its result unless it has one, and reports whether it did. Once
// every task has its result the call is ended (cancelled), unless each got it from
// the handler's answer (answered: this one did): the handler then ends the call
// itself right after its last answer, and receive reads on to that end (a cancel
// would cost an RST_STREAM each way for a call that is over anyway).
func (b *batchRun) finish(it *batchItem, res Result, answered bool) bool {
	if !it.done.CompareAndSwap(false, true) {
		return false
	}
	if !answered {
		b.early.Store(true)
	}
	if it.cl != nil {
		res.Logs = b.h.tap.end(it.t.ID, it.cl)
	}
	res.Usage.Wall = time.Since(b.start)
	b.done(it.i, res)
	if !answered {
		b.settled()
	}
	if b.left.Add(-1) == 0 && b.early.Load() {
		b.cancel()
	}
	return true
}

// batch runs the calls idx, all served by h, in one HandleBatch call.
func (r *Runner) batch(ctx context.Context, h *handler, start time.Time, calls []Call, idx []int, done func(int, Result), settled func()) {
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &batchRun{r: r, h: h, start: start, done: done, settled: settled, cancel: cancel}
	b.left.Store(int64(len(idx)))
	items := make([]*batchItem, len(idx))
	for k, i := range idx {
		c := calls[i]
		ictx := c.Ctx
		if ictx == nil {
			ictx = ctx
		}
		if !c.Task.Deadline.IsZero() {
			var icancel context.CancelFunc
			ictx, icancel = context.WithDeadline(ictx, c.Task.Deadline)
			defer icancel()
		}
		items[k] = &batchItem{i: i, t: c.Task, ctx: ictx}
	}
	p := h.running()
	if p == nil || p.batchless.Load() {
		// Down (each task then waits for the restart within its own deadline, as
		// Execute's do), not started yet (lazy), or without HandleBatch.
		r.unbatched(b, items)
		return
	}
	req := &handlerpb.HandleBatchRequest{Items: make([]*handlerpb.HandleRequest, 0, len(items))}
	sent := make([]*batchItem, 0, len(items))
	var latest time.Time
	allDeadlines := true
	base := newID() + "."
	for k, it := range items {
		if callEnded(it.ctx) {
			b.finish(it, ctxResult(it.ctx, h, fmt.Sprintf("before task %s was sent to handler %q", it.t.ID, h.spec.Name)), false)
			continue
		}
		it.callID = base + strconv.Itoa(k) // one random id per batch: unique, and cheaper
		it.cl = h.tap.begin(it.t.ID, it.callID, it.t.OnLog)
		hr := r.request(it.ctx, it.t, it.callID)
		if hr.DeadlineUnixNanos == 0 {
			allDeadlines = false
		} else if dl := time.Unix(0, hr.DeadlineUnixNanos); dl.After(latest) {
			latest = dl
		}
		req.Items = append(req.Items, hr)
		sent = append(sent, it)
	}
	if len(sent) == 0 {
		return
	}
	if allDeadlines {
		var dcancel context.CancelFunc
		bctx, dcancel = context.WithDeadline(bctx, latest)
		defer dcancel()
	}
	stream, err := p.rpc.HandleBatch(bctx, req)
	if err == nil {
		// A task whose context ends gets its result at once; the handler is told, and
		// given KillGrace to return (as Execute's reap).
		for _, it := range sent {
			it.stop = context.AfterFunc(it.ctx, func() { r.ended(b, p, it) })
		}
		defer func() {
			for _, it := range sent {
				it.stop()
			}
		}()
		err = r.receive(b, stream, sent)
	}
	if err == nil {
		return
	}
	if status.Code(err) == codes.Unimplemented {
		if !p.batchless.Swap(true) {
			h.log.Info("handler does not implement HandleBatch (built with an older plugins/sdk?): one Handle call per task", "pid", p.pid())
		}
		var rest []*batchItem
		for _, it := range sent {
			if it.stop == nil || it.stop() { // its AfterFunc has not run and will not
				b.h.tap.end(it.t.ID, it.cl)
				it.cl = nil
				rest = append(rest, it)
			}
		}
		r.unbatched(b, rest)
		return
	}
	exited := sync.OnceValue(func() bool { return waitExit(p) })
	for _, it := range sent {
		if it.done.Load() {
			continue
		}
		ictx := it.ctx
		if ctx.Err() != nil {
			ictx = ctx
		}
		b.finish(it, r.callFailed(ictx, h, p, it.t, it.callID, err, exited), false)
	}
}

// receive reads the answers of a HandleBatch call until the call ends (the handler
// ends it after its last answer; finish cancels it once every task has its result
// when some did not get it from an answer), and returns the error that ended the
// stream before every task had its result (nil when none did).
func (r *Runner) receive(b *batchRun, stream handlerpb.Handler_HandleBatchClient, sent []*batchItem) error {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			for _, it := range sent {
				if it.done.Load() {
					continue
				}
				b.finish(it, b.h.fail(ReasonUnavailable, true, "handler %q ended a HandleBatch call without answering task %s (a bug in the handler's plugins/sdk)", b.h.spec.Name, it.t.ID), false)
			}
			return nil
		}
		if err != nil {
			if b.left.Load() == 0 {
				return nil // every task is done: the call was ended on purpose
			}
			return err
		}
		for _, a := range m.GetAnswers() {
			k := int(a.GetIndex())
			if k >= len(sent) || sent[k].done.Load() {
				continue
			}
			it := sent[k]
			it.stop() // its result is here: a later end of its ctx changes nothing
			if a.GetResponse().GetLogEnd() {
				it.cl.waitEnd() // the lines it logged travel on another pipe than its answer
			}
			b.finish(it, r.answer(it.ctx, b.h, it.t, a.GetResponse()), true)
		}
		b.settled()
	}
}

// ended gives task it, whose context ended while its batch ran, its timeout or
// cancelled result, cancels it in the handler, and kills the handler if the task is
// still running KillGrace later.
func (r *Runner) ended(b *batchRun, p *proc, it *batchItem) {
	if it.done.Load() {
		return
	}
	if !b.finish(it, ctxResult(it.ctx, b.h, fmt.Sprintf("task %s cancelled in handler %q", it.t.ID, b.h.spec.Name)), false) {
		return
	}
	r.wg.Add(1)
	cctx, cancel := context.WithTimeout(r.ctx, r.cfg.KillGrace)
	_, _ = p.rpc.CancelCall(cctx, &handlerpb.CancelCallRequest{CallId: it.callID})
	cancel()
	b.h.reap(p, it.callID, it.t.ID)
}

// unbatched runs items with one Handle call each, all at once, for a handler
// without HandleBatch.
func (r *Runner) unbatched(b *batchRun, items []*batchItem) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := r.execute(it.ctx, it.t)
			b.finish(it, res, false)
		}()
	}
	wg.Wait()
}
