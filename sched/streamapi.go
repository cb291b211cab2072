package sched

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"golang.org/x/sync/semaphore"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/stream"
)

// MaxStreamWindow bounds StreamOpen.window: the items one stream may have outstanding,
// and so the results the server buffers for a client that stops reading.
const MaxStreamWindow = 4096

// MaxStreamBytes bounds the payload bytes one stream may have outstanding (admitted,
// result not yet sent): with the window it bounds what a stream holds in the server's
// memory (a transient stream's payloads live there until their results go out). It is
// raised to server.max_inline_bytes when that is larger, so one item always fits.
const MaxStreamBytes = 16 << 20

// MaxTenantStreams bounds the streams one tenant may have open at once.
const MaxTenantStreams = 32

// MaxTenantStreamItems bounds the windows of one tenant's open streams together: the
// items it may have outstanding at once over all its streams (each outstanding durable
// item is watched until it ends).
const MaxTenantStreamItems = 4 * MaxStreamWindow

// transientNotice is what a transient stream's client is told at open.
const transientNotice = "transient stream: its tasks are kept in this server's memory only and are not stored; " +
	"if the server restarts, every task of the stream not yet delivered is lost (the stream ends with an error); " +
	"open a durable stream (transient: false) for tasks that must survive a restart"

// streamRun is one open stream on the server.
type streamRun struct {
	id        string
	typ       string
	transient bool
	tmpl      store.Task // every item's task but its id and payload
	order     *stream.Reorder[*paddockv1.StreamResult]
	// pushMu orders the pushes of released results onto out (Done then push, atomically).
	pushMu sync.Mutex
	out    chan *paddockv1.StreamResult // released, not yet sent; never more than the window
	closed chan struct{}                // closed when the stream ends
	// msgsIn and msgsOut count the messages that carried the stream's items in and its
	// results out (batches count once).
	msgsIn, msgsOut atomic.Uint64
}

// StreamInfo is what the server knows of one stream, for operators and tests.
type StreamInfo struct {
	ID, Type  string
	Transient bool
	Window    int
	stream.Stats
	// Open is false once the stream ended (the server keeps the last few ended ones).
	Open bool
	// MessagesIn counts the client's messages that carried items (a StreamItems counts
	// once), MessagesOut the server's that carried results.
	MessagesIn, MessagesOut uint64
}

// streams tracks open streams and the last ended ones. mu guards the fields below.
type streams struct {
	mu        sync.Mutex
	open      map[string]*streamRun
	window    map[string]int
	perTenant map[string]int // open streams by tenant
	// tenantItems is the windows of each tenant's open streams, summed.
	tenantItems map[string]int
	ended       []StreamInfo // the last maxEndedStreams, oldest first
}

const maxEndedStreams = 32

func newStreams() *streams {
	return &streams{open: map[string]*streamRun{}, window: map[string]int{}, perTenant: map[string]int{}, tenantItems: map[string]int{}}
}

// Streams returns the open streams and the last few ended ones, by id.
func (s *Server) Streams() []StreamInfo {
	s.streams.mu.Lock()
	defer s.streams.mu.Unlock()
	out := append([]StreamInfo(nil), s.streams.ended...)
	for id, r := range s.streams.open {
		out = append(out, r.info(s.streams.window[id], true))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// info is what StreamInfo says of run, whose window is w.
func (run *streamRun) info(w int, open bool) StreamInfo {
	return StreamInfo{ID: run.id, Type: run.typ, Transient: run.transient, Window: w, Stats: run.order.Stats(), Open: open,
		MessagesIn: run.msgsIn.Load(), MessagesOut: run.msgsOut.Load()}
}

// Stream implements paddockv1connect.TaskServiceHandler: one ordered stream.
func (api *clientAPI) Stream(ctx context.Context, bs *connect.BidiStream[paddockv1.StreamRequest, paddockv1.StreamResponse]) error {
	s := api.s
	ctx, err := s.streamAuth(ctx, bs.RequestHeader().Get("Authorization"))
	if err != nil {
		return err
	}
	first, err := bs.Receive()
	if err != nil {
		return fmt.Errorf("receiving the stream's open: %w", err)
	}
	open := first.GetOpen()
	if open == nil {
		return invalid("open: missing: the first message of a stream must be a StreamOpen")
	}
	tn := caller(ctx).Tenant
	run, w, err := s.openStream(open, tn)
	if err != nil {
		return err
	}
	s.streams.mu.Lock()
	switch {
	case s.streams.perTenant[tn] >= MaxTenantStreams:
		s.streams.mu.Unlock()
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"tenant %s has %d streams open, the most one tenant may have (sched.MaxTenantStreams): close one, or send more items through fewer streams", tn, MaxTenantStreams))
	case s.streams.tenantItems[tn]+w > MaxTenantStreamItems:
		s.streams.mu.Unlock()
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"open.window: %d more items outstanding would pass tenant %s's limit of %d over all its open streams (%d taken; sched.MaxTenantStreamItems): use a smaller window, or close a stream",
			w, tn, MaxTenantStreamItems, s.streams.tenantItems[tn]))
	}
	s.streams.perTenant[tn]++
	s.streams.tenantItems[tn] += w
	s.streams.mu.Unlock()
	defer func() {
		s.streams.mu.Lock()
		s.streams.tenantItems[tn] -= w
		if s.streams.perTenant[tn]--; s.streams.perTenant[tn] <= 0 {
			delete(s.streams.perTenant, tn)
			delete(s.streams.tenantItems, tn)
		}
		s.streams.mu.Unlock()
	}()
	notice := ""
	if run.transient {
		notice = transientNotice
	}
	if err := bs.Send(&paddockv1.StreamResponse{Msg: &paddockv1.StreamResponse_Opened{Opened: &paddockv1.StreamOpened{
		StreamId: run.id, Window: uint32(w), Durable: !run.transient, Notice: notice, BatchItems: true}}}); err != nil {
		return err
	}
	s.metrics.streams.WithLabelValues(map[bool]string{true: "transient", false: "durable"}[run.transient]).Inc()
	s.streams.mu.Lock()
	s.streams.open[run.id], s.streams.window[run.id] = run, w
	s.streams.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		close(run.closed)
		if run.transient {
			s.trans.dropStream(s, run)
		}
		s.streams.mu.Lock()
		delete(s.streams.open, run.id)
		s.streams.ended = append(s.streams.ended, run.info(w, false))
		if len(s.streams.ended) > maxEndedStreams {
			s.streams.ended = s.streams.ended[1:]
		}
		delete(s.streams.window, run.id)
		s.streams.mu.Unlock()
	}()

	// The reader takes a credit before each Receive: past the window it reads nothing,
	// and HTTP/2 flow control holds the client back. A message of k items (StreamItems,
	// at most the window) then takes the k-1 credits more, waiting as results go out:
	// no more than the window is ever admitted. The sender returns an item's credit once
	// its result is sent.
	// Payload bytes are bounded the same way (byteBudget): the reader takes an item's
	// bytes after reading it and waits while the stream holds its budget; the sender
	// gives them back with the item's result. Results go out in admission order, so the
	// sizes queue in that order too.
	credits := make(chan struct{}, w)
	items := make(chan []byte, w)
	sizes := make(chan int64, w)
	budget := semaphore.NewWeighted(s.streamByteBudget())
	readErr := make(chan error, 1)
	go func() {
		defer close(items)
		for {
			select {
			case credits <- struct{}{}:
			case <-ctx.Done():
				return
			}
			m, err := bs.Receive()
			if errors.Is(err, io.EOF) {
				<-credits
				return
			}
			if err != nil {
				readErr <- err
				return
			}
			payloads, err := s.streamPayloads(m, w)
			if err != nil {
				readErr <- err
				return
			}
			run.msgsIn.Add(1)
			for i, p := range payloads {
				if i > 0 { // the first item's credit was taken before Receive
					select {
					case credits <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
				n := int64(len(p))
				if err := budget.Acquire(ctx, n); err != nil {
					return
				}
				sizes <- n
				items <- p
			}
		}
	}()
	subErr := make(chan error, 1)
	go func() { subErr <- s.admit(ctx, run, items) }()

	var sent uint64
	inputDone := false
	for {
		if inputDone && sent == run.order.Stats().Admitted {
			return nil
		}
		select {
		case r := <-run.out:
			n, err := sendResults(bs, r, run.out, open.GetBatchResults())
			if err != nil {
				return err
			}
			sent += uint64(n)
			run.msgsOut.Add(1)
			for range n {
				budget.Release(<-sizes)
				<-credits
			}
		case err := <-subErr:
			if err != nil {
				return err
			}
			inputDone = true
			subErr = nil
		case err := <-readErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// streamPayloads checks one message after a stream's open and returns its payloads:
// one for a StreamItem, 1..w (the stream's window) for a StreamItems.
func (s *Server) streamPayloads(m *paddockv1.StreamRequest, w int) ([][]byte, error) {
	var ps [][]byte
	field := "item.payload"
	switch x := m.GetMsg().(type) {
	case *paddockv1.StreamRequest_Item:
		ps = [][]byte{x.Item.GetPayload()}
	case *paddockv1.StreamRequest_Items:
		its := x.Items.GetItems()
		switch {
		case len(its) == 0:
			return nil, invalid("items.items: empty: a StreamItems carries 1..%d items (the stream's window); send at least one, or nothing", w)
		case len(its) > w:
			return nil, invalid("items.items: %d items in one message is over the stream's window of %d: send at most the window at once (the items outstanding never pass it)", len(its), w)
		}
		ps = make([][]byte, len(its))
		for i, it := range its {
			ps[i] = it.GetPayload()
		}
		field = "items.items[%d].payload"
	case *paddockv1.StreamRequest_Open:
		return nil, invalid("open: a second StreamOpen: a stream is opened once; every later message is a StreamItem or StreamItems (open another stream for another type)")
	default:
		return nil, invalid("item: missing: every message after the open must be a StreamItem or StreamItems")
	}
	for i, p := range ps {
		if len(p) > s.cfg.MaxInlineBytes {
			f := field
			if strings.Contains(f, "%d") {
				f = fmt.Sprintf(f, i)
			}
			return nil, invalid("%s: %d bytes is over the server's inline limit of %d bytes (server.max_inline_bytes): send larger inputs as blobs with a durable task", f, len(p), s.cfg.MaxInlineBytes)
		}
	}
	return ps, nil
}

// Bounds of one StreamResults: results, and bytes of output beyond its first result.
const (
	maxResultsBatch      = 256
	maxResultsBatchBytes = 512 << 10
)

// sendResults sends r and, when batch is set, the results already waiting on out with
// it as one StreamResults (nothing waits to fill a batch). It returns how many it sent.
func sendResults(bs *connect.BidiStream[paddockv1.StreamRequest, paddockv1.StreamResponse], r *paddockv1.StreamResult, out <-chan *paddockv1.StreamResult, batch bool) (int, error) {
	if !batch {
		return 1, bs.Send(&paddockv1.StreamResponse{Msg: &paddockv1.StreamResponse_Result{Result: r}})
	}
	rs, size := []*paddockv1.StreamResult{r}, len(r.GetOutput())
more:
	for len(rs) < maxResultsBatch && size < maxResultsBatchBytes {
		select {
		case x := <-out:
			rs = append(rs, x)
			size += len(x.GetOutput())
		default:
			break more
		}
	}
	if len(rs) == 1 {
		return 1, bs.Send(&paddockv1.StreamResponse{Msg: &paddockv1.StreamResponse_Result{Result: r}})
	}
	return len(rs), bs.Send(&paddockv1.StreamResponse{Msg: &paddockv1.StreamResponse_Results{Results: &paddockv1.StreamResults{Results: rs}}})
}

// openStream checks an open and returns the new stream with its window.
// streamByteBudget is the payload bytes one stream may have outstanding.
func (s *Server) streamByteBudget() int64 {
	return max(int64(MaxStreamBytes), int64(s.cfg.MaxInlineBytes))
}

func (s *Server) openStream(open *paddockv1.StreamOpen, tn string) (*streamRun, int, error) {
	w := int(open.GetWindow())
	switch {
	case w == 0:
		return nil, 0, invalid("open.window: 0: give the most items outstanding at once, 1..%d", MaxStreamWindow)
	case w > MaxStreamWindow:
		return nil, 0, invalid("open.window: %d is over the limit of %d items outstanding (sched.MaxStreamWindow): use a smaller window, or several streams", w, MaxStreamWindow)
	}
	tmpl, err := s.validateSpec(&paddockv1.TaskSpec{Type: open.GetType(), Class: open.GetClass(), Priority: open.GetPriority(),
		TimeoutMs: open.GetTimeoutMs(), MaxAttempts: open.GetMaxAttempts()})
	if err != nil {
		return nil, 0, renameErr(err, "task", "open")
	}
	tmpl.Tenant = tn // the stream's tasks are its caller's tenant's (auth.go)
	id, err := uuid.NewV7()
	if err != nil {
		return nil, 0, connect.NewError(connect.CodeInternal, err)
	}
	return &streamRun{id: id.String(), typ: tmpl.Type, transient: open.GetTransient(), tmpl: tmpl,
		order: stream.NewReorder[*paddockv1.StreamResult](w), out: make(chan *paddockv1.StreamResult, w), closed: make(chan struct{})}, w, nil
}

// renameErr renames the field prefix of an API error: "task.type: …" → "open.type: …".
func renameErr(err error, from, to string) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	msg := ce.Message()
	if rest, ok := strings.CutPrefix(msg, from+"."); ok {
		msg = to + "." + rest
	}
	return connect.NewError(ce.Code(), errors.New(msg))
}

// deliver records the result of item seq of run and queues the results it releases.
func (run *streamRun) deliver(seq uint64, r *paddockv1.StreamResult) {
	run.deliverAll([]deliverable{{seq, r}})
}

// deliverable is the result of one item of a stream.
type deliverable struct {
	seq uint64
	r   *paddockv1.StreamResult
}

// deliverAll records results of items of run, as deliver each, under one lock.
func (run *streamRun) deliverAll(ds []deliverable) {
	run.pushMu.Lock()
	defer run.pushMu.Unlock()
	for _, d := range ds {
		rel, err := run.order.Done(d.seq, d.r)
		if err != nil {
			continue // a second result for an item: exactly once, so dropped
		}
		for _, x := range rel {
			select {
			case run.out <- x: // never blocks: out holds at most the window
			case <-run.closed:
				return
			}
		}
	}
}

// admit admits the stream's items as the reader hands them over, until items closes:
// a durable stream stores them in batches and watches each task; a transient one queues
// them in memory for the dispatcher.
func (s *Server) admit(ctx context.Context, run *streamRun, items <-chan []byte) error {
	for {
		var batch [][]byte
		p, ok := <-items
		if !ok {
			return nil
		}
		batch = append(batch, p)
	drain:
		for len(batch) < 512 {
			select {
			case p, ok := <-items:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		seqs := make([]uint64, len(batch))
		for i := range batch {
			seq, err := run.order.Admit()
			if err != nil { // cannot happen: the reader holds a credit for each item
				return connect.NewError(connect.CodeInternal, fmt.Errorf("stream %s: %w", run.id, err))
			}
			seqs[i] = seq
		}
		if run.transient {
			s.trans.push(s, run, seqs, batch)
			continue
		}
		if err := s.admitDurable(ctx, run, seqs, batch); err != nil {
			return err
		}
	}
}

// admitDurable stores one batch of a durable stream's items and watches each task.
func (s *Server) admitDurable(ctx context.Context, run *streamRun, seqs []uint64, batch [][]byte) error {
	// The tenant's max_queued holds for stream items as for submits; past it the stream
	// ends with the same error (its admitted items stay stored and run).
	if err := s.checkQueued(ctx, run.tmpl.Tenant, len(batch)); err != nil {
		return err
	}
	now := time.Now()
	deadline := s.scheduleDeadline(now, &paddockv1.TaskSpec{})
	ts := make([]store.Task, len(batch))
	for i, p := range batch {
		id, err := uuid.NewV7()
		if err != nil {
			return connect.NewError(connect.CodeInternal, err)
		}
		t := run.tmpl
		t.ID, t.Payload, t.CreatedAt, t.ScheduleDeadline = id.String(), p, now, deadline
		ts[i] = t
	}
	stored, _, err := s.st.CreateBatch(ctx, ts)
	if err != nil {
		return storeErr(fmt.Errorf("storing %d items of stream %s: %w", len(ts), run.id, err))
	}
	s.metrics.submits.WithLabelValues("created").Add(float64(len(stored)))
	s.wakeType(run.typ)
	for i := range stored {
		go s.watchDurable(ctx, run, seqs[i], stored[i].ID)
	}
	return nil
}

// watchDurable waits until task id (item seq of run) is terminal and delivers it.
func (s *Server) watchDurable(ctx context.Context, run *streamRun, seq uint64, id string) {
	poll, stopPoll := s.waitPoll() // another replica may finish the task
	defer stopPoll()
	for {
		w := s.addWaiter(id)
		t, err := s.st.Get(ctx, id)
		if err == nil && t.State.Terminal() {
			s.removeWaiter(id, w)
			r := &paddockv1.StreamResult{Seq: seq, TaskId: t.ID, State: stateProto(t.State), Output: t.Output, Error: t.Error, Attempts: int32(t.Attempt)}
			if t.State != store.Succeeded {
				if att, err := s.st.Attempts(ctx, id); err == nil && len(att) > 0 {
					r.FailureKind = kindProto(att[len(att)-1].FailureKind)
				}
			}
			run.deliver(seq, r)
			return
		}
		select {
		case <-w:
		case <-poll:
			s.removeWaiter(id, w)
		case <-ctx.Done():
			s.removeWaiter(id, w)
			return
		}
	}
}
