package runner

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paddockvm/paddock/api/guestabi"
	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// ErrChecksum is wrapped by the error for a handler binary whose sha256 does
// not match its manifest entry.
var ErrChecksum = errors.New("handler binary does not match its sha256")

// TaskType is a task type served by one of the runner's handlers.
type TaskType struct {
	Name        string
	Version     string
	Concurrency int // the handler's suggestion; 0: none
	Description string
	Handler     string // HandlerSpec.Name of the handler serving it
}

// Task is one call to run.
type Task struct {
	ID       string
	Type     string
	Payload  []byte
	Inputs   map[string][]byte // small inputs, inline in the call
	Attempt  int
	Deadline time.Time // zero: only ctx bounds the call
	// InputFiles are inputs of any size the handler reads as files, by input name
	// (the same namespace as Inputs). The caller has checked each file's size.
	InputFiles map[string]InputFile
	// OutputDir is an existing directory where the handler writes its output files,
	// one per output name; empty: the handler can write none. The caller owns it
	// (creates it, collects the files, removes them).
	OutputDir string
	// MaxOutputBytes bounds the sum of the output files' sizes (Assign.max_output_bytes);
	// 0: no limit. Inline outputs stay bounded by Config.MaxOutputBytes.
	MaxOutputBytes int64
	// OnLog, when set, receives each line the handler logs during the call as it
	// arrives (long lines cut as in Result.Logs), instead of Result.Logs, which then
	// stays empty. It is called from the goroutine reading the handler's output: it
	// must not block. It is not called after Execute returned.
	OnLog func(LogLine)
}

// InputFile is one input handed to the handler as a file.
type InputFile struct {
	Path   string // absolute path, readable by the handler process
	Size   int64  // its size in bytes
	Digest string // "sha256:<hex>"
}

// OutputFile is one output file the handler wrote in Task.OutputDir, named by its
// output name (the file's name). Size and Digest are what the handler's SDK computed
// while it was written; the runner has checked the file exists with that size.
type OutputFile struct {
	Size   int64
	Digest string // "sha256:<hex>"
}

// Reason classifies a failed Result.
type Reason string

// Reasons of a failed Result. A successful Result has ReasonNone.
const (
	ReasonNone           Reason = ""
	ReasonHandlerError   Reason = "handler_error"       // the handler's code returned an error
	ReasonCrashed        Reason = "handler_crashed"     // the process exited (or was killed) during the call
	ReasonTimeout        Reason = "timeout"             // the task's deadline passed
	ReasonCancelled      Reason = "cancelled"           // the caller's ctx was cancelled
	ReasonOutputTooLarge Reason = "output_too_large"    // the result exceeded Config.MaxOutputBytes
	ReasonUnknownType    Reason = "unknown_type"        // no handler serves the task's type
	ReasonUnavailable    Reason = "handler_unavailable" // the handler could not be reached
	ReasonPanic          Reason = "handler_panic"       // the handler panicked (recovered by the SDK)
	ReasonBadOutput      Reason = "handler_bad_output"  // the handler reported output files that are not there as reported
)

// Usage is what a call cost.
type Usage struct {
	// Wall is the time Execute took, as the agent sees it.
	Wall time.Duration
	// HandlerWall is the time the handler function ran, as the handler measured it.
	HandlerWall time.Duration
	// CPU is the handler process's CPU time while the call ran (approximate when
	// calls overlap; 0 when the handler does not report it).
	CPU time.Duration
}

// Result is the outcome of Execute. Error is empty on success.
type Result struct {
	Output  []byte
	Outputs map[string][]byte
	// OutputFiles are the files the handler wrote in Task.OutputDir, by output name.
	OutputFiles map[string]OutputFile
	Error       string
	Retryable   bool
	Reason      Reason
	Handler     string
	Usage       Usage
	// Logs are the lines the handler logged during the call (see TaskLog).
	Logs TaskLog
}

// OK reports whether the task succeeded.
func (r Result) OK() bool { return r.Error == "" }

// HandlerStatus is what operators see of one handler.
type HandlerStatus struct {
	Name string
	Path string
	Up   bool
	// Started is false for a lazy handler (Config.Lazy) no call has needed yet.
	Started  bool
	PID      int
	Restarts int
	LastExit string // why the previous process ended ("" if none did)
}

// Runner runs tasks through handler plugins. It is safe for concurrent use.
type Runner struct {
	cfg      Config
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	handlers []*handler
	byType   map[string]*handler
	types    []TaskType

	// certMu guards cert and certPEM, the TLS client certificate (clientCert).
	certMu  sync.Mutex
	cert    tls.Certificate
	certPEM []byte
}

// New checks every handler binary's sha256, starts each one, asks it which
// task types it serves, and keeps it running until Close. It fails (stopping
// what it started) if a binary does not match its checksum, does not start, or
// serves a type another handler serves too. ctx bounds the starting only.
//
// The handlers start in parallel. With cfg.Lazy, a handler whose types are
// declared (HandlerSpec.Types) is not started here but on its first call (see
// Config.Lazy); its checksum is checked then.
func New(ctx context.Context, cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rctx, cancel := context.WithCancel(context.Background())
	r := &Runner{cfg: cfg, log: cfg.Logger, ctx: rctx, cancel: cancel, byType: map[string]*handler{}}
	type started struct {
		p     *proc
		types []TaskType
		err   error
	}
	results := make([]chan started, len(cfg.Handlers))
	for i, spec := range cfg.Handlers {
		sum, _ := hex.DecodeString(spec.SHA256)
		h := &handler{r: r, spec: spec, sum: sum, log: r.log.With("handler", spec.Name), up: make(chan struct{}),
			tap: newLogTap(filepath.Base(spec.Path), int(cfg.MaxTaskLogBytes))}
		r.handlers = append(r.handlers, h)
		if cfg.Lazy && len(spec.Types) > 0 {
			continue
		}
		results[i] = make(chan started, 1)
		go func(c chan<- started) {
			p, types, err := h.start(ctx)
			c <- started{p, types, err}
		}(results[i])
	}
	var firstErr error
	for i, h := range r.handlers {
		types := h.declared()
		if results[i] != nil {
			res := <-results[i]
			if res.err != nil {
				firstErr = cmp.Or(firstErr, res.err)
				continue
			}
			h.launched = true
			h.setUp(res.p)
			r.wg.Add(1)
			go h.supervise(res.p)
			types = res.types
		}
		for _, t := range types {
			if other, dup := r.byType[t.Name]; dup && firstErr == nil {
				firstErr = fmt.Errorf("task type %q is served by both handler %q and handler %q: remove it from one", t.Name, other.spec.Name, h.spec.Name)
			}
			r.byType[t.Name] = h
			r.types = append(r.types, t)
		}
	}
	if firstErr != nil {
		r.Close()
		return nil, firstErr
	}
	sort.Slice(r.types, func(i, j int) bool { return r.types[i].Name < r.types[j].Name })
	return r, nil
}

// PrepareCert makes the TLS client certificate the runner presents to its handlers
// now, if it has none yet, so that no handler's start waits for it. Under TCG the key
// and self-signed certificate took 1–3 s of a first task's start (BenchmarkFirstTask).
// The agent calls it in the background once registered: after a warm start's restore,
// so that no two restored guests share the key.
func (r *Runner) PrepareCert() error {
	_, _, err := r.clientCert()
	return err
}

// clientCert returns the runner's TLS client certificate, made on first use: one per
// runner (go-plugin's AutoMTLS makes one per client). Every handler process of the
// runner gets the same certificate; none of them sees its key.
func (r *Runner) clientCert() (tls.Certificate, []byte, error) {
	r.certMu.Lock()
	defer r.certMu.Unlock()
	if r.certPEM == nil {
		cert, certPEM, err := clientCert()
		if err != nil {
			return tls.Certificate{}, nil, err
		}
		r.cert, r.certPEM = cert, certPEM
	}
	return r.cert, r.certPEM, nil
}

// StartAll starts, one after the other, every lazy handler no call has started yet,
// and returns when each is up or has failed (a failure is logged, and the next call
// of its types tries again). Calls that arrive meanwhile wait for their handler's start
// as usual. The agent calls it in the background after registering when every handler
// should be up early (handler_start: eager).
func (r *Runner) StartAll(ctx context.Context) {
	for _, h := range r.handlers {
		if ctx.Err() != nil {
			return
		}
		_, _ = h.get(ctx)
	}
}

// Types returns the task types served, sorted by name, for registration.
func (r *Runner) Types() []TaskType { return append([]TaskType(nil), r.types...) }

// Status returns each handler's state.
func (r *Runner) Status() []HandlerStatus {
	out := make([]HandlerStatus, 0, len(r.handlers))
	for _, h := range r.handlers {
		h.mu.Lock()
		st := HandlerStatus{Name: h.spec.Name, Path: h.spec.Path, Restarts: h.restarts, LastExit: h.lastExit, Started: h.launched}
		if h.cur != nil {
			st.Up, st.PID = true, h.cur.pid()
		}
		h.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Close stops every handler (gracefully, then by force) and waits for them.
// Calls in flight fail.
func (r *Runner) Close() error {
	r.cancel()
	for _, h := range r.handlers {
		h.mu.Lock()
		h.closed = true
		p := h.cur
		h.mu.Unlock()
		if p != nil {
			p.client.close()
		}
	}
	r.wg.Wait()
	return nil
}

// Execute runs t on the handler serving t.Type and returns the result; it never
// panics on a handler's behalf and always returns. The call is bounded by ctx
// and t.Deadline.
func (r *Runner) Execute(ctx context.Context, t Task) Result {
	start := time.Now()
	res := r.execute(ctx, t)
	res.Usage.Wall = time.Since(start)
	return res
}

func (r *Runner) execute(ctx context.Context, t Task) (res Result) {
	h := r.byType[t.Type]
	if h == nil {
		return r.unknownType(t.Type)
	}
	if !t.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, t.Deadline)
		defer cancel()
	}
	p, err := h.get(ctx)
	if err != nil {
		return h.getFailed(ctx, err)
	}
	callID := newID()
	cl := h.tap.begin(t.ID, callID, t.OnLog)
	defer func() { res.Logs = h.tap.end(t.ID, cl) }()
	resp, err := p.rpc.Handle(ctx, r.request(ctx, t, callID), grpc.MaxCallRecvMsgSize(int(r.cfg.MaxOutputBytes)+1<<20))
	if err != nil {
		return r.callFailed(ctx, h, p, t, callID, err, func() bool { return waitExit(p) })
	}
	if resp.GetLogEnd() {
		cl.waitEnd() // the lines it logged travel on another pipe than its answer
	}
	return r.answer(ctx, h, t, resp)
}

// unknownType is the result of a task of a type no handler serves.
func (r *Runner) unknownType(typ string) Result {
	names := make([]string, len(r.types))
	for i, tt := range r.types {
		names[i] = tt.Name
	}
	return Result{Reason: ReasonUnknownType,
		Error: fmt.Sprintf("no handler serves task type %q (served: %s)", typ, strings.Join(names, ", "))}
}

// getFailed is the result of a task whose handler h could not be had (h.get's err).
func (h *handler) getFailed(ctx context.Context, err error) Result {
	if ctx.Err() != nil {
		return ctxResult(ctx, h, fmt.Sprintf("while waiting for handler %q to (re)start", h.spec.Name))
	}
	return h.fail(ReasonUnavailable, true, "handler %q: %v", h.spec.Name, err)
}

// fail is a failed result of a call to h.
func (h *handler) fail(reason Reason, retryable bool, format string, args ...any) Result {
	return Result{Handler: h.spec.Name, Reason: reason, Retryable: retryable, Error: fmt.Sprintf(format, args...)}
}

// request is t as the handler protocol's HandleRequest of call callID, bounded by ctx.
func (r *Runner) request(ctx context.Context, t Task, callID string) *handlerpb.HandleRequest {
	req := &handlerpb.HandleRequest{
		CallId: callID, Type: t.Type, Payload: t.Payload, Inputs: t.Inputs,
		TaskId: t.ID, Attempt: uint32(t.Attempt), MaxOutputBytes: uint64(r.cfg.MaxOutputBytes),
		OutputDir: t.OutputDir,
	}
	if t.OutputDir != "" {
		// The handler's limit covers inline outputs plus output files.
		req.MaxOutputBytes = uint64(t.MaxOutputBytes)
	}
	if len(t.InputFiles) > 0 {
		req.InputFiles = make(map[string]*handlerpb.InputFile, len(t.InputFiles))
		for name, f := range t.InputFiles {
			req.InputFiles[name] = &handlerpb.InputFile{Path: f.Path, Size: f.Size, Digest: f.Digest}
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		req.DeadlineUnixNanos = dl.UnixNano()
	}
	return req
}

// waitExit waits up to 2 s for p to exit (after a call to it failed) and reports
// whether it has.
func waitExit(p *proc) bool {
	select {
	case <-p.exited:
	case <-time.After(2 * time.Second):
	}
	return p.hasExited()
}

// callFailed is the result of task t whose call callID to p did not complete (err,
// a gRPC error): cancelled or past its deadline (the handler is then given
// KillGrace to return, see reap), a result too large, or the handler crashed or
// unreachable. exited waits for the process to exit and reports whether it did.
func (r *Runner) callFailed(ctx context.Context, h *handler, p *proc, t Task, callID string, err error, exited func() bool) Result {
	// The deadline travels to the handler as grpc-timeout, so its side can end the
	// stream with DeadlineExceeded a moment before this ctx's own timer fires.
	if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
		r.wg.Add(1)
		go h.reap(p, callID, t.ID)
		what := fmt.Sprintf("task %s cancelled in handler %q", t.ID, h.spec.Name)
		if ctx.Err() == nil {
			return Result{Handler: h.spec.Name, Reason: ReasonTimeout, Retryable: true, Error: "deadline exceeded " + what}
		}
		return ctxResult(ctx, h, what)
	}
	if status.Code(err) == codes.ResourceExhausted {
		return h.fail(ReasonOutputTooLarge, false, "handler %q: result of task type %q is larger than the limit of %d bytes (runner Config.MaxOutputBytes): %v", h.spec.Name, t.Type, r.cfg.MaxOutputBytes, status.Convert(err).Message())
	}
	// The call did not complete: find out whether the process died.
	if exited() {
		why := "exited"
		if k := p.killed(); k != "" {
			why = "was killed (" + k + ")"
		}
		return h.fail(ReasonCrashed, true, "handler crashed: handler %q (pid %d) %s during task %s: %v", h.spec.Name, p.pid(), why, t.ID, status.Convert(err).Message())
	}
	if status.Code(err) == codes.Unavailable {
		h.kill(p, "lost the gRPC connection to it")
	}
	return h.fail(ReasonUnavailable, true, "calling handler %q for task %s: %v", h.spec.Name, t.ID, err)
}

// answer is the result of task t from the handler's answer resp; ctx bounded the call.
func (r *Runner) answer(ctx context.Context, h *handler, t Task, resp *handlerpb.HandleResponse) Result {
	if resp.GetError() != nil && callEnded(ctx) {
		// The handler ended the call with an error because its context ended: the task's
		// deadline reaches the handler as an absolute time (and as grpc-timeout), so its
		// answer, most often ctx.Err(), can arrive before this ctx's own timer fires.
		// That is the deadline or the cancel, not the handler's failure.
		return ctxResult(ctx, h, fmt.Sprintf("task %s ended in handler %q", t.ID, h.spec.Name))
	}
	res := Result{Handler: h.spec.Name}
	if u := resp.GetUsage(); u != nil {
		res.Usage.CPU = time.Duration(u.GetCpuNanos())
		res.Usage.HandlerWall = time.Duration(u.GetWallNanos())
	}
	if e := resp.GetError(); e != nil {
		res.Error, res.Retryable, res.Reason = e.GetMessage(), e.GetRetryable(), ReasonHandlerError
		switch e.GetKind() {
		case handlerpb.ErrorKind_ERROR_KIND_OUTPUT_TOO_LARGE:
			res.Reason = ReasonOutputTooLarge
			limit := "runner Config.MaxOutputBytes"
			if t.OutputDir != "" {
				limit = "the task's MaxOutputBytes"
			}
			res.Error = fmt.Sprintf("handler %q: result of task type %q refused: %s (%s)", h.spec.Name, t.Type, e.GetMessage(), limit)
		case handlerpb.ErrorKind_ERROR_KIND_UNKNOWN_TYPE:
			res.Reason = ReasonUnknownType
		case handlerpb.ErrorKind_ERROR_KIND_PANIC:
			res.Reason = ReasonPanic
		}
		if res.Error == "" {
			res.Error = "handler returned an error without a message"
		}
		return res
	}
	size := int64(len(resp.GetOutput()))
	for _, b := range resp.GetOutputs() {
		size += int64(len(b))
	}
	if size > r.cfg.MaxOutputBytes {
		return h.fail(ReasonOutputTooLarge, false, "handler %q: result of task type %q is %d bytes, over the limit of %d bytes (runner Config.MaxOutputBytes)", h.spec.Name, t.Type, size, r.cfg.MaxOutputBytes)
	}
	files, total, err := checkOutputFiles(t.OutputDir, resp.GetOutputFiles())
	if err != nil {
		return h.fail(ReasonBadOutput, false, "handler %q, task type %q: %v", h.spec.Name, t.Type, err)
	}
	if t.MaxOutputBytes > 0 && total > t.MaxOutputBytes {
		return h.fail(ReasonOutputTooLarge, false, "handler %q: output files of task type %q total %d bytes, over the task's limit of %d bytes", h.spec.Name, t.Type, total, t.MaxOutputBytes)
	}
	res.Output, res.Outputs, res.OutputFiles = resp.GetOutput(), resp.GetOutputs(), files
	return res
}

// checkOutputFiles checks the output files a handler reported: each name valid,
// each a regular file in dir with the reported size, each digest well formed.
// It returns them and their total size.
func checkOutputFiles(dir string, reported map[string]*handlerpb.OutputFile) (map[string]OutputFile, int64, error) {
	if len(reported) == 0 {
		return nil, 0, nil
	}
	if dir == "" {
		return nil, 0, fmt.Errorf("reported %d output files but the task had no output directory", len(reported))
	}
	names := make([]string, 0, len(reported))
	for name := range reported {
		names = append(names, name)
	}
	sort.Strings(names)
	files := make(map[string]OutputFile, len(reported))
	var total int64
	for _, name := range names {
		f := reported[name]
		if !guestabi.ValidName(name) {
			return nil, 0, fmt.Errorf("reported output file %q: not a valid output name (%s)", name, guestabi.NameRule)
		}
		if !validDigest(f.GetDigest()) {
			return nil, 0, fmt.Errorf("reported output file %q with digest %q: want \"sha256:\" and 64 lowercase hex digits", name, f.GetDigest())
		}
		path := filepath.Join(dir, name)
		st, err := os.Lstat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, 0, fmt.Errorf("reported output file %q, but %s does not exist", name, path)
		case err != nil:
			return nil, 0, fmt.Errorf("checking reported output file %q: %w", name, err)
		case !st.Mode().IsRegular():
			return nil, 0, fmt.Errorf("reported output file %q, but %s is a %v, not a regular file", name, path, st.Mode().Type())
		case st.Size() != f.GetSize():
			return nil, 0, fmt.Errorf("reported output file %q of %d bytes, but %s has %d bytes", name, f.GetSize(), path, st.Size())
		}
		files[name] = OutputFile{Size: f.GetSize(), Digest: f.GetDigest()}
		total += f.GetSize()
	}
	return files, total, nil
}

// validDigest reports whether d is "sha256:" and 64 lowercase hex digits.
func validDigest(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	for _, c := range hexPart {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// callEnded reports whether ctx is done or its deadline has passed (its timer may not
// have fired yet).
func callEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// ctxResult is the result of a call that ctx ended: a timeout once its deadline has
// passed (whether or not its timer has fired yet), else a cancel.
func ctxResult(ctx context.Context, h *handler, what string) Result {
	if dl, ok := ctx.Deadline(); errors.Is(ctx.Err(), context.DeadlineExceeded) || ok && !time.Now().Before(dl) {
		return Result{Handler: h.spec.Name, Reason: ReasonTimeout, Retryable: true, Error: "deadline exceeded " + what}
	}
	return Result{Handler: h.spec.Name, Reason: ReasonCancelled, Retryable: true, Error: "cancelled " + what}
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// VerifyFile checks that the file at path has the given sha256 (raw bytes),
// returning an error wrapping ErrChecksum that names both digests.
func VerifyFile(path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if got := hs.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("%w: %s has sha256 %x, the manifest says %x", ErrChecksum, path, got, want)
	}
	return nil
}

// SHA256File returns the hex sha256 of a file (for building HandlerSpecs).
func SHA256File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", path, err)
	}
	defer f.Close()
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(hs.Sum(nil)), nil
}

// osExec is exec.Command, replaceable in tests.
var osExec = exec.Command
