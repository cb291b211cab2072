package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/api/guestabi"
)

// ChunkSize is the size of the data messages WriteBlob sends.
const ChunkSize = 256 << 10

// taskError is a failure of the data path: the report's error, whether a retry helps
// and, when the failure itself says, its kind.
type taskError struct {
	msg       string
	retryable bool
	kind      agentv1.FailureKind // UNSPECIFIED: the kind of the stage that failed (see failure)
}

func (e *taskError) Error() string { return e.msg }

func failf(retryable bool, format string, args ...any) *taskError {
	return failk(agentv1.FailureKind_FAILURE_KIND_UNSPECIFIED, retryable, format, args...)
}

// failk is failf for a failure of a given kind.
func failk(kind agentv1.FailureKind, retryable bool, format string, args ...any) *taskError {
	return &taskError{msg: fmt.Sprintf(format, args...), retryable: retryable, kind: kind}
}

// ctxKind is the kind of a failure because ctx ended: its deadline (the task's) passed,
// or it was cancelled.
func ctxKind(ctx context.Context) agentv1.FailureKind {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return agentv1.FailureKind_FAILURE_KIND_TIMEOUT
	}
	return agentv1.FailureKind_FAILURE_KIND_CANCELLED
}

// failure turns an error of the data path into a failed Result of the error's kind, or
// of stage (the kind of the step that failed) when the error names none.
func failure(err error, stage agentv1.FailureKind) Result {
	var te *taskError
	if errors.As(err, &te) {
		if te.kind != agentv1.FailureKind_FAILURE_KIND_UNSPECIFIED {
			stage = te.kind
		}
		return Result{Error: te.msg, Retryable: te.retryable, Kind: stage}
	}
	return Result{Error: err.Error(), Retryable: true, Kind: stage}
}

// prepare makes t's blob inputs available as files and gives it an output directory,
// per its data path: under DATA_PATH_SHARED it waits for the host's staging marker
// and checks the staged files; under DATA_PATH_STREAM it fetches the inputs with
// ReadBlob into the agent's data directory. A task without a data path is left as is.
func (s *Session) prepare(ctx context.Context, t *Task) error {
	if t.DataPath == agentv1.DataPath_DATA_PATH_UNSPECIFIED && len(t.InputBlobs) == 0 {
		return nil // nothing to prepare (most tasks): no deadline timer, no lease directory name
	}
	for name := range t.InputBlobs {
		if !guestabi.ValidName(name) {
			return failf(false, "input blob %q: not a valid input name (%s); resubmit the task with a valid name", name, guestabi.NameRule)
		}
	}
	lease := guestabi.LeaseDir(t.ID, t.LeaseID)
	if !t.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, t.Deadline)
		defer cancel()
	}
	switch t.DataPath {
	case agentv1.DataPath_DATA_PATH_UNSPECIFIED:
		if len(t.InputBlobs) > 0 {
			return failf(true, "the server sent %d input blobs without a data path: this agent cannot receive them; upgrade the server or the agent so both speak the data plane", len(t.InputBlobs))
		}
		return nil
	case agentv1.DataPath_DATA_PATH_SHARED:
		in := filepath.Join(s.cfg.InRoot, lease)
		if len(t.InputBlobs) > 0 {
			if _, err := os.Stat(s.cfg.InRoot); err != nil {
				return failf(true, "the guest's input share is not there (%v): the agent's PID 1 mounts it (tag %s) at %s; check the image's kernel modules and the guest's console log", err, guestabi.InTag, s.cfg.InRoot)
			}
			if err := s.waitStaged(ctx, t, in); err != nil {
				return err
			}
		}
		t.InputFiles = make(map[string]InputFile, len(t.InputBlobs))
		for name, ref := range t.InputBlobs {
			p := filepath.Join(in, name)
			fi, err := os.Stat(p)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return failf(true, "input %q (%s): the host marked the inputs staged but %s does not exist; check the host daemon's staging log (the task will be retried)", name, ref.Digest, p)
			case err != nil:
				return failf(true, "input %q (%s): %v; check the guest's input share %s", name, ref.Digest, err, s.cfg.InRoot)
			case fi.Size() != ref.Size:
				return failf(true, "input %q (%s): the staged file %s has %d bytes, the blob has %d; check the host's blob cache (the task will be retried)", name, ref.Digest, p, fi.Size(), ref.Size)
			}
			t.InputFiles[name] = InputFile{Path: p, Size: ref.Size, Digest: ref.Digest}
		}
		t.OutputDir = filepath.Join(s.cfg.OutRoot, lease)
		if err := os.MkdirAll(t.OutputDir, 0o755); err != nil {
			return failf(true, "creating the output directory in the guest's output share: %v; check that %s is mounted writable", err, s.cfg.OutRoot)
		}
		return nil
	case agentv1.DataPath_DATA_PATH_STREAM:
		dir := filepath.Join(s.cfg.DataDir, lease)
		var dirs []string
		s.mu.Lock()
		if n := len(s.spare); n > 0 && len(t.InputBlobs) == 0 {
			dir, s.spare = s.spare[n-1], s.spare[:n-1] // exists, with an empty out/
		} else {
			dirs = append(dirs, filepath.Join(dir, "out"))
			if len(t.InputBlobs) > 0 {
				dirs = append(dirs, filepath.Join(dir, "in"))
			}
		}
		s.dataDirs[lease] = &dataDir{path: dir, noInputs: len(t.InputBlobs) == 0}
		s.mu.Unlock()
		for _, d := range dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return failf(true, "creating the task's data directory: %v; check the agent's data_dir %s (free space, permissions)", err, s.cfg.DataDir)
			}
		}
		t.InputFiles = make(map[string]InputFile, len(t.InputBlobs))
		for name, ref := range t.InputBlobs {
			p := filepath.Join(dir, "in", name)
			if err := s.fetchBlob(ctx, t, name, ref, p); err != nil {
				return err
			}
			t.InputFiles[name] = InputFile{Path: p, Size: ref.Size, Digest: ref.Digest}
		}
		t.OutputDir = filepath.Join(dir, "out")
		return nil
	}
	return failf(false, "unknown data path %v: upgrade the agent", t.DataPath)
}

// waitStaged polls for the staging marker in dir until it appears, ctx ends or the
// task's deadline passes, and returns the marker's error if staging failed.
// ctx carries the task's deadline.
func (s *Session) waitStaged(ctx context.Context, t *Task, dir string) error {
	path := filepath.Join(dir, guestabi.MarkerName)
	tick := time.NewTicker(s.cfg.StagePoll)
	defer tick.Stop()
	start := time.Now()
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			m, err := guestabi.DecodeMarker(b)
			if err != nil {
				return failf(true, "reading the host's staging marker %s: %v; check the host daemon (the task will be retried)", path, err)
			}
			if !m.OK {
				what := "the task will be retried"
				if !m.Retryable {
					what = "a retry would not help; check the task's input blobs"
				}
				return failf(m.Retryable, "the host could not stage the inputs: %s (%s)", m.Error, what)
			}
			s.log.Debug("inputs staged", "task", t.ID, "lease", t.LeaseID, "waited", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return failf(true, "reading the host's staging marker %s: %v; check the guest's input share %s", path, err, s.cfg.InRoot)
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return failk(ctxKind(ctx), true, "deadline exceeded while waiting %v for the host to stage the %d inputs (no %s in %s); check the host daemon's staging and the host's blob cache",
					time.Since(start).Round(time.Millisecond), len(t.InputBlobs), guestabi.MarkerName, dir)
			}
			return failk(ctxKind(ctx), true, "stopped while waiting for the host to stage the inputs: %v", context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// permanent reports whether a blob RPC that failed with err will fail the same way on
// another connection, and whether running the task again can help then.
func permanent(err error) (perm, retryable bool) {
	switch status.Code(err) {
	case codes.NotFound, codes.InvalidArgument, codes.Unimplemented, codes.OutOfRange:
		return true, false
	case codes.PermissionDenied, codes.FailedPrecondition, codes.Unauthenticated, codes.ResourceExhausted:
		return true, true
	}
	return false, true
}

// StallLimit is how long a blob transfer keeps retrying without moving a byte
// (reconnects included) before the task fails, retryably.
const StallLimit = 30 * time.Second

// backoff is the pause before the n-th retry in a row.
func backoff(n int) time.Duration { return min(time.Duration(n)*100*time.Millisecond, 2*time.Second) }

// fetchBlob reads input name of t with ReadBlob into path, hashing while it writes,
// resuming from the last offset when the stream breaks, and checks digest and size.
func (s *Session) fetchBlob(ctx context.Context, t *Task, name string, ref BlobRef, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return failf(true, "input %q: creating %s: %v; check the agent's data_dir %s", name, path, err, s.cfg.DataDir)
	}
	defer f.Close()
	h := sha256.New()
	var off int64
	fails, progress := 0, time.Now()
	for {
		n, err := s.readBlobOnce(ctx, t, ref, off, io.MultiWriter(f, h))
		off += n
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			why := context.Cause(ctx)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = errors.New("the task's deadline passed")
			}
			return failk(ctxKind(ctx), true, "input %q (%s): stopped while fetching it at byte %d of %d: %v", name, ref.Digest, off, ref.Size, why)
		}
		if errors.Is(err, errTooLong) {
			return failf(true, "input %q (%s): the server sent more than the blob's %d bytes; the task will be retried (check the server's blob store if it repeats)", name, ref.Digest, ref.Size)
		}
		var we *writeError
		if errors.As(err, &we) {
			return failf(true, "input %q: writing %s: %v; check the free space in the agent's data_dir %s", name, path, we.err, s.cfg.DataDir)
		}
		if perm, retry := permanent(err); perm {
			return failf(retry, "input %q (%s): the server refused to send it: %v", name, ref.Digest, status.Convert(err).Message())
		}
		if n > 0 {
			fails, progress = 0, time.Now()
		}
		if fails++; time.Since(progress) > StallLimit {
			return failf(true, "input %q (%s): fetching it from the server made no progress for %v (%d tries) at byte %d of %d: %v; check the network to the server (the task will be retried)",
				name, ref.Digest, StallLimit, fails, off, ref.Size, err)
		}
		s.log.Warn("fetching an input broke; resuming", "task", t.ID, "input", name, "offset", off, "err", err)
		if err := sleep(ctx, backoff(fails)); err != nil {
			return failk(ctxKind(ctx), true, "input %q (%s): stopped while fetching it: %v", name, ref.Digest, context.Cause(ctx))
		}
	}
	if off != ref.Size {
		return failf(true, "input %q (%s): the server sent %d bytes, the blob has %d; the task will be retried", name, ref.Digest, off, ref.Size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != ref.Digest {
		return failf(true, "input %q: the server sent bytes with digest %s, want %s; the task will be retried (check the server's blob store if it repeats)", name, got, ref.Digest)
	}
	if err := f.Close(); err != nil {
		return failf(true, "input %q: writing %s: %v; check the agent's data_dir %s", name, path, err, s.cfg.DataDir)
	}
	return nil
}

var errTooLong = errors.New("more bytes than the blob's size")

// writeError marks a local write failure (not the server's fault).
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// readBlobOnce streams the blob from off into w over the current connection and
// returns the bytes written; nil error means the server ended the stream.
func (s *Session) readBlobOnce(ctx context.Context, t *Task, ref BlobRef, off int64, w io.Writer) (int64, error) {
	c, err := s.client(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.ReadBlob(s.rpcCtx(ctx), &agentv1.ReadBlobRequest{AgentId: s.cfg.AgentID, TaskId: t.ID, LeaseId: t.LeaseID, LeaseSecret: t.LeaseSecret, Digest: ref.Digest, Offset: off})
	if err != nil {
		return 0, err
	}
	var n int64
	for {
		ch, err := st.Recv()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if off+n+int64(len(ch.GetData())) > ref.Size {
			return n, errTooLong
		}
		if _, err := w.Write(ch.GetData()); err != nil {
			return n, &writeError{err}
		}
		n += int64(len(ch.GetData()))
	}
}

// finish checks the output files of a successful run and, under DATA_PATH_STREAM,
// stores each with WriteBlob. It returns res, or a failure.
func (s *Session) finish(ctx context.Context, t Task, res Result) Result {
	if len(res.OutputFiles) == 0 {
		return res
	}
	if t.OutputDir == "" {
		return Result{Kind: agentv1.FailureKind_FAILURE_KIND_BAD_OUTPUT,
			Error: fmt.Sprintf("the handler returned %d output files but the task has no output directory (no data path): a handler bug, or upgrade the server", len(res.OutputFiles))}
	}
	var sum int64
	for name, f := range res.OutputFiles {
		if !guestabi.ValidName(name) {
			return Result{Kind: agentv1.FailureKind_FAILURE_KIND_BAD_OUTPUT,
				Error: fmt.Sprintf("output file %q: not a valid output name (%s); fix the handler", name, guestabi.NameRule)}
		}
		sum += f.Size
	}
	if t.MaxOutputBytes > 0 && sum > t.MaxOutputBytes {
		return Result{Kind: agentv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE,
			Error: fmt.Sprintf("the output files add up to %d bytes, more than the task's limit of %d (server.max_output_bytes); write less, or raise the limit", sum, t.MaxOutputBytes)}
	}
	if t.DataPath != agentv1.DataPath_DATA_PATH_STREAM {
		return res // the host collects them from the output share
	}
	for name, f := range res.OutputFiles {
		if err := s.storeBlob(ctx, t, name, f); err != nil {
			return failure(err, agentv1.FailureKind_FAILURE_KIND_OUTPUT_TRANSFER)
		}
	}
	return res
}

// storeBlob sends output name of t with WriteBlob, retrying from the start when the
// stream breaks.
func (s *Session) storeBlob(ctx context.Context, t Task, name string, of OutputFile) error {
	path := filepath.Join(t.OutputDir, name)
	start := time.Now()
	for fails := 1; ; fails++ {
		sent, err := s.writeBlobOnce(ctx, t, name, of, path)
		if sent > 0 {
			start = time.Now() // the stall limit counts from the last attempt that moved bytes
		}
		var te *taskError
		if err == nil || errors.As(err, &te) {
			return err
		}
		if ctx.Err() != nil {
			return failk(ctxKind(ctx), true, "output %q: stopped while storing it: %v", name, context.Cause(ctx))
		}
		var we *writeError
		if errors.As(err, &we) {
			return failf(true, "output %q: reading %s: %v", name, path, we.err)
		}
		if perm, retry := permanent(err); perm {
			return failf(retry, "output %q (%s, %d bytes): the server refused to store it: %v", name, of.Digest, of.Size, status.Convert(err).Message())
		}
		if time.Since(start) > StallLimit {
			return failf(true, "output %q (%s): storing it on the server failed for %v (%d tries): %v; check the network to the server (the task will be retried)", name, of.Digest, StallLimit, fails, err)
		}
		s.log.Warn("storing an output broke; retrying", "task", t.ID, "output", name, "err", err)
		if err := sleep(ctx, backoff(fails)); err != nil {
			return failk(ctxKind(ctx), true, "output %q: stopped while storing it: %v", name, context.Cause(ctx))
		}
	}
}

// writeBlobOnce sends one output in one WriteBlob call and returns how many of its
// bytes it sent.
func (s *Session) writeBlobOnce(ctx context.Context, t Task, name string, of OutputFile, path string) (sent int64, _ error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, &writeError{err}
	}
	defer f.Close()
	c, err := s.client(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.WriteBlob(s.rpcCtx(ctx))
	if err != nil {
		return 0, err
	}
	err = st.Send(&agentv1.WriteBlobRequest{Header: &agentv1.WriteBlobHeader{AgentId: s.cfg.AgentID, TaskId: t.ID, LeaseId: t.LeaseID, LeaseSecret: t.LeaseSecret,
		Name: name, Digest: of.Digest, Size: of.Size}})
	buf := make([]byte, ChunkSize)
	for err == nil {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			if err = st.Send(&agentv1.WriteBlobRequest{Data: buf[:n]}); err == nil {
				sent += int64(n)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return sent, &writeError{rerr}
		}
	}
	if err != nil && err != io.EOF {
		return sent, err
	}
	// On io.EOF from Send the server ended the stream: CloseAndRecv has its status.
	resp, err := st.CloseAndRecv()
	if err != nil {
		return sent, err
	}
	if resp.GetDigest() != of.Digest || resp.GetSize() != of.Size {
		return sent, failf(true, "output %q: the server stored %s (%d bytes), want %s (%d bytes)", name, resp.GetDigest(), resp.GetSize(), of.Digest, of.Size)
	}
	return sent, nil
}

// client waits for a connection to the server and returns its AgentService client.
func (s *Session) client(ctx context.Context) (agentv1.AgentServiceClient, error) {
	for {
		s.mu.Lock()
		c, ready := s.conn, s.connReady
		s.mu.Unlock()
		if c != nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-ready:
		}
	}
}

// rpcCtx adds the session's bearer token to a call's context.
func (s *Session) rpcCtx(ctx context.Context) context.Context {
	if s.cfg.Token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.cfg.Token)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// dropDataLocked removes the data directory of a lease (DATA_PATH_STREAM) once its
// report is acknowledged or the task is dropped. Caller holds s.mu.
func (s *Session) dropDataLocked(taskID string, leaseID uint64) {
	if len(s.dataDirs) == 0 {
		return
	}
	key := guestabi.LeaseDir(taskID, leaseID)
	dir, ok := s.dataDirs[key]
	if !ok {
		return
	}
	delete(s.dataDirs, key)
	go s.releaseDir(dir)
}

// dataDir is the data directory of one DATA_PATH_STREAM lease.
type dataDir struct {
	path string
	// noInputs: the task had no input blobs; succeeded: its run ended in success (so
	// its handler is done writing). Such a directory whose out/ is still empty after
	// the report serves the next task without input blobs instead of being removed:
	// the server names DATA_PATH_STREAM for every task of a TCP agent, and making and
	// removing two directories a task is what most small tasks would spend on it.
	noInputs, succeeded bool
}

// releaseDir keeps d as a spare (see dataDir) or removes it.
func (s *Session) releaseDir(d *dataDir) {
	if d.noInputs && d.succeeded && emptyDir(filepath.Join(d.path, "out")) {
		s.mu.Lock()
		if len(s.spare) < s.total {
			s.spare = append(s.spare, d.path)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
	if err := os.RemoveAll(d.path); err != nil {
		s.log.Warn("removing a task's data directory", "dir", d.path, "err", err)
	}
}

// emptyDir reports whether dir exists and holds nothing.
func emptyDir(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return err == io.EOF
}

// leaseDirRE matches the names guestabi.LeaseDir makes: "<task>.<lease>".
var leaseDirRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*\.[0-9]+$`)

// cleanDataDir removes what an earlier agent process left in the data directory
// (no task of this process has data there yet).
func (s *Session) cleanDataDir() {
	ents, err := os.ReadDir(s.cfg.DataDir)
	if err != nil {
		return
	}
	n := 0
	for _, e := range ents {
		if !e.IsDir() || !leaseDirRE.MatchString(e.Name()) {
			continue // not ours: leave what someone else put there
		}
		if err := os.RemoveAll(filepath.Join(s.cfg.DataDir, e.Name())); err != nil {
			s.log.Warn("removing a stale task data directory", "dir", e.Name(), "err", err)
		}
		n++
	}
	if n > 0 {
		s.log.Info("removed stale task data from an earlier run", "dir", s.cfg.DataDir, "leases", n)
	}
}
