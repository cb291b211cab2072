package sdk

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/paddockvm/paddock/plugins/internal/contract"
	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// server implements handlerpb.HandlerServer around a Handler.
type server struct {
	handlerpb.UnimplementedHandlerServer
	h     Handler
	types []TaskType
	known map[string]bool
	// workers is how many items of a HandleBatch of each type run at once: the
	// type's declared Concurrency, else GOMAXPROCS.
	workers map[string]int

	// mu guards calls: call id → the running call (Handle, or an item of HandleBatch).
	mu    sync.Mutex
	calls map[string]*running
}

// running is a call in progress: done is closed when it returns, cancel cancels
// its context.
type running struct {
	done   chan struct{}
	cancel context.CancelFunc
}

var _ handlerpb.HandlerServer = (*server)(nil)

func newServer(h Handler) (*server, error) {
	types := h.Describe()
	if err := ValidateTypes(types); err != nil {
		return nil, fmt.Errorf("handler's Describe: %w", err)
	}
	s := &server{h: h, types: types, known: map[string]bool{}, workers: map[string]int{}, calls: map[string]*running{}}
	for _, t := range types {
		s.known[t.Name] = true
		s.workers[t.Name] = cmp.Or(t.Concurrency, runtime.GOMAXPROCS(0))
	}
	return s, nil
}

// ValidateTypes checks what a Describe returned: at least one type, each with a
// name and a version, names unique, concurrency not negative.
func ValidateTypes(types []TaskType) error {
	cs := make([]contract.TaskType, len(types))
	for i, t := range types {
		cs[i] = contract.TaskType{Name: t.Name, Version: t.Version, Concurrency: t.Concurrency}
	}
	return contract.ValidateTypes(cs)
}

func (s *server) Describe(context.Context, *handlerpb.DescribeRequest) (*handlerpb.DescribeResponse, error) {
	resp := &handlerpb.DescribeResponse{
		SdkVersion:      Version,
		ProtocolVersion: ProtocolVersion,
		Capabilities: &handlerpb.Capabilities{
			WaitCall:        true,
			MaxMessageBytes: MaxMessageBytes,
			CpuUsage:        cpuUsageSupported,
		},
	}
	for _, t := range s.types {
		resp.Types = append(resp.Types, &handlerpb.TaskType{
			Name: t.Name, Version: t.Version, Concurrency: uint32(t.Concurrency), Description: t.Description,
		})
	}
	return resp, nil
}

func (s *server) Handle(ctx context.Context, req *handlerpb.HandleRequest) (*handlerpb.HandleResponse, error) {
	ctx, end := s.track(ctx, req.GetCallId(), req.GetDeadlineUnixNanos())
	defer end()
	return s.handle(ctx, req, true)
}

// track registers call id (none if "") for CancelCall and WaitCall: the call runs
// under the context returned, which CancelCall cancels and which ends at the call's
// deadline (deadlineNanos, Unix nanoseconds; 0: none); end, called once the call is
// answered, unregisters it and lets WaitCall return.
func (s *server) track(ctx context.Context, id string, deadlineNanos int64) (_ context.Context, end func()) {
	var cancel context.CancelFunc
	if deadlineNanos != 0 { // one context for the cancel and the deadline (handle needs no other)
		ctx, cancel = context.WithDeadline(ctx, time.Unix(0, deadlineNanos))
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	if id == "" {
		return ctx, cancel
	}
	r := &running{done: make(chan struct{}), cancel: cancel}
	s.mu.Lock()
	s.calls[id] = r
	s.mu.Unlock()
	return ctx, func() {
		cancel()
		s.mu.Lock()
		if s.calls[id] == r { // not since replaced by a call that reused the id
			delete(s.calls, id)
		}
		s.mu.Unlock()
		close(r.done)
	}
}

// handle runs one task, alone (Handle) or as an item of HandleBatch, under ctx (see
// track). The task's context also ends at its deadline_unix_nanos.
// With cpu, the usage it answers has the CPU time the process used while it ran
// (two getrusage calls); HandleBatch leaves that out and shares the process's CPU
// among the answers of each message instead (see cpuShares).
func (s *server) handle(ctx context.Context, req *handlerpb.HandleRequest, cpu bool) (resp *handlerpb.HandleResponse, err error) {
	// Runs before the response is sent: when records were logged during the call,
	// the end-of-call line follows them, and the agent waits for it.
	logged := logRecords.Load()
	defer func() {
		if resp != nil && logRecords.Load() != logged && logCallEnd(req.GetCallId(), req.GetTaskId()) {
			resp.LogEnd = true
		}
	}()
	ctx = withTask(ctx, req.GetTaskId(), int(req.GetAttempt()))
	if !s.known[req.GetType()] {
		return &handlerpb.HandleResponse{Error: &handlerpb.Error{
			Message: fmt.Sprintf("this handler does not serve task type %q (it serves %v)", req.GetType(), s.typeNames()),
			Kind:    handlerpb.ErrorKind_ERROR_KIND_UNKNOWN_TYPE,
		}}, nil
	}
	if ctx.Err() != nil {
		// Cancelled before it started: do not run it at all.
		return nil, ctx.Err()
	}
	if ns := req.GetDeadlineUnixNanos(); ns != 0 {
		if dl, ok := ctx.Deadline(); !ok || dl.After(time.Unix(0, ns)) { // track's context has it already
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, time.Unix(0, ns))
			defer cancel()
		}
	}

	r := Request{
		Type:           req.GetType(),
		Payload:        req.GetPayload(),
		Inputs:         req.GetInputs(),
		Files:          make(map[string]File, len(req.GetInputFiles())),
		OutputDir:      req.GetOutputDir(),
		MaxOutputBytes: int64(req.GetMaxOutputBytes()),
		TaskID:         req.GetTaskId(),
		Attempt:        int(req.GetAttempt()),
		call:           newCall(ctx, req.GetOutputDir(), int64(req.GetMaxOutputBytes())),
	}
	if r.Inputs == nil {
		r.Inputs = map[string][]byte{}
	}
	for name, f := range req.GetInputFiles() {
		r.Files[name] = File{Name: name, Path: f.GetPath(), Size: f.GetSize(), Digest: f.GetDigest()}
	}
	if ns := req.GetDeadlineUnixNanos(); ns != 0 {
		r.Deadline = time.Unix(0, ns)
	}
	cpu0 := int64(-1)
	if cpu {
		cpu0 = cpuTime()
	}
	start := time.Now()
	out, err := s.call(ctx, r)
	if ferr := r.call.finish(); err == nil && ferr != nil {
		err = ferr
	}
	var files map[string]OutputFile
	if err == nil {
		files, err = r.call.collect(ctx)
	}
	usage := &handlerpb.Usage{WallNanos: uint64(time.Since(start))}
	if cpu0 >= 0 {
		usage.CpuNanos = uint64(max(cpuTime()-cpu0, 0))
	}
	resp = &handlerpb.HandleResponse{Usage: usage}
	size := uint64(len(out.Output))
	for _, b := range out.Outputs {
		size += uint64(len(b))
	}
	for _, f := range files {
		size += uint64(f.Size)
	}
	max := req.GetMaxOutputBytes()
	tooLarge := errors.Is(err, ErrOutputTooLarge) || r.call.exceeded || (max > 0 && size > max)
	if err == nil && !tooLarge {
		for name := range out.Outputs {
			if _, dup := files[name]; dup {
				err = Fatalf("output %q is both inline (Response.Outputs) and a file in the output directory: give them different names", name)
				break
			}
		}
	}
	switch {
	case tooLarge:
		resp.Error = &handlerpb.Error{Kind: handlerpb.ErrorKind_ERROR_KIND_OUTPUT_TOO_LARGE}
		if err != nil {
			resp.Error.Message = err.Error()
		} else {
			resp.Error.Message = fmt.Sprintf("output of %d bytes exceeds the agent's limit of %d bytes", size, max)
		}
	case err != nil:
		resp.Error = &handlerpb.Error{Message: err.Error(), Retryable: IsRetryable(err)}
		var pe *panicError
		if errors.As(err, &pe) {
			resp.Error.Kind = handlerpb.ErrorKind_ERROR_KIND_PANIC
		}
	}
	if resp.Error != nil {
		r.call.removeCreated()
		return resp, nil
	}
	resp.Output, resp.Outputs = out.Output, out.Outputs
	if len(files) > 0 {
		resp.OutputFiles = make(map[string]*handlerpb.OutputFile, len(files))
		for name, f := range files {
			resp.OutputFiles[name] = &handlerpb.OutputFile{Size: f.Size, Digest: f.Digest}
		}
	}
	return resp, nil
}

// call runs the handler, turning a panic into a fatal error so one bad task
// does not take down the other calls in flight.
func (s *server) call(ctx context.Context, r Request) (resp Response, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{msg: fmt.Sprintf("handler panicked on task type %q: %v\n%s", r.Type, p, debug.Stack())}
		}
	}()
	return s.h.Handle(ctx, r)
}

// batchMessageBytes bounds one HandleBatchResponse message (under the gRPC limit,
// with room for its framing).
const batchMessageBytes = MaxMessageBytes - 64<<10

// HandleBatch runs each item as Handle would, the items of each type in their order
// and up to that type's workers at once, and streams each answer back as soon as it
// is done; the answers that are done when the sender gets to them share one message
// (nothing waits to fill a message). An answer too large for a message of its own is
// replaced by an OUTPUT_TOO_LARGE error. Every item is registered before any runs, so
// that a CancelCall for an item still waiting for a worker stops it from running.
func (s *server) HandleBatch(req *handlerpb.HandleBatchRequest, stream handlerpb.Handler_HandleBatchServer) error {
	items := req.GetItems()
	if len(items) == 0 {
		return status.Error(codes.InvalidArgument, "HandleBatchRequest.items is empty: send at least one item")
	}
	ctx := stream.Context()
	answers := make(chan *handlerpb.BatchAnswer, len(items)) // never blocks a worker
	ctxs := make([]context.Context, len(items))
	ends := make([]func(), len(items))
	byType := map[string][]int{}
	for i, it := range items {
		ctxs[i], ends[i] = s.track(ctx, it.GetCallId(), it.GetDeadlineUnixNanos())
		byType[it.GetType()] = append(byType[it.GetType()], i)
	}
	for typ, idx := range byType {
		next := new(atomic.Int64)
		work := func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(idx) {
					return
				}
				i := idx[k]
				resp, err := s.handle(ctxs[i], items[i], false)
				ends[i]()
				if err != nil { // its context ended before it started
					resp = &handlerpb.HandleResponse{Error: &handlerpb.Error{Message: err.Error(), Retryable: true}}
				}
				answers <- &handlerpb.BatchAnswer{Index: uint32(i), Response: resp}
			}
		}
		for w := min(len(idx), max(1, s.workers[typ])); w > 0; w-- {
			go work()
		}
	}
	var held *handlerpb.BatchAnswer // taken from answers, for the next message
	cpu := cpuTime()                // when the CPU shared among the next message's answers starts
	for sent := 0; sent < len(items); {
		msg := &handlerpb.HandleBatchResponse{}
		size := 0
		if held == nil {
			select {
			case held = <-answers:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	fill:
		for held != nil {
			n := proto.Size(held)
			if n > batchMessageBytes {
				held.Response = &handlerpb.HandleResponse{Usage: held.GetResponse().GetUsage(), Error: &handlerpb.Error{
					Kind:    handlerpb.ErrorKind_ERROR_KIND_OUTPUT_TOO_LARGE,
					Message: fmt.Sprintf("answer of %d bytes exceeds the largest message of %d bytes", n, batchMessageBytes),
				}}
				n = proto.Size(held)
			}
			if len(msg.Answers) > 0 && size+n > batchMessageBytes {
				break
			}
			msg.Answers, size, held = append(msg.Answers, held), size+n, nil
			select {
			case held = <-answers:
			default:
				break fill
			}
		}
		cpu = cpuShares(msg.Answers, cpu)
		if err := stream.Send(msg); err != nil {
			return err
		}
		sent += len(msg.Answers)
	}
	return nil
}

// cpuShares sets the CPU usage of answers, about to go in one message: the CPU time
// the process used since since (cpuTime when the batch started or the message before
// was sent), in equal shares among the answers with a usage. It returns the time
// read now, where the next message's shares start (since again when no answer here
// ran: its time goes to the next message). The items of a batch run at once and
// share the process, so a per-item figure is approximate anyway; this way one
// getrusage per message (each costs a system call that sums every thread of the
// process, about 5 µs in a VM) instead of two per item, and the shares of a batch add
// up to the process's CPU time (overlapping per-item readings counted it once per
// item running at the time).
func cpuShares(answers []*handlerpb.BatchAnswer, since int64) int64 {
	if since < 0 {
		return since // no CPU time on this platform
	}
	n := 0
	for _, a := range answers {
		if a.GetResponse().GetUsage() != nil {
			n++
		}
	}
	if n == 0 {
		return since
	}
	now := cpuTime()
	if now < since {
		return now
	}
	share := uint64(now-since) / uint64(n)
	for _, a := range answers {
		if u := a.GetResponse().GetUsage(); u != nil {
			u.CpuNanos = share
		}
	}
	return now
}

// CancelCall cancels the context of the running call call_id.
func (s *server) CancelCall(_ context.Context, req *handlerpb.CancelCallRequest) (*handlerpb.CancelCallResponse, error) {
	s.mu.Lock()
	c, ok := s.calls[req.GetCallId()]
	s.mu.Unlock()
	if ok {
		c.cancel()
	}
	return &handlerpb.CancelCallResponse{WasRunning: ok}, nil
}

func (s *server) WaitCall(ctx context.Context, req *handlerpb.WaitCallRequest) (*handlerpb.WaitCallResponse, error) {
	s.mu.Lock()
	c, ok := s.calls[req.GetCallId()]
	s.mu.Unlock()
	if !ok {
		return &handlerpb.WaitCallResponse{}, nil
	}
	select {
	case <-c.done:
		return &handlerpb.WaitCallResponse{WasRunning: true}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *server) typeNames() []string {
	names := make([]string, 0, len(s.types))
	for _, t := range s.types {
		names = append(names, t.Name)
	}
	return names
}

// panicError is a recovered panic; it is fatal (not retryable).
type panicError struct{ msg string }

func (e *panicError) Error() string { return e.msg }
