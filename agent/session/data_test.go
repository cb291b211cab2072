package session

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/api/guestabi"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fileExec is a fake executor that reads its input files and writes one output file
// per input, "<name>.out", holding the input's bytes reversed; it records the tasks.
type fileExec struct {
	mu    sync.Mutex
	tasks []Task
}

func (f *fileExec) Types() []TaskType { return []TaskType{{Name: "files", Version: "1"}} }

func (f *fileExec) ran() []Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Task(nil), f.tasks...)
}

func (f *fileExec) Execute(ctx context.Context, t Task) Result {
	f.mu.Lock()
	f.tasks = append(f.tasks, t)
	f.mu.Unlock()
	res := Result{Output: []byte("done"), OutputFiles: map[string]OutputFile{}}
	for name, in := range t.InputFiles {
		b, err := os.ReadFile(in.Path)
		if err != nil {
			return Result{Error: err.Error()}
		}
		if int64(len(b)) != in.Size || digestOf(b) != in.Digest {
			return Result{Error: fmt.Sprintf("input %s: %d bytes %s, task says %d %s", name, len(b), digestOf(b), in.Size, in.Digest)}
		}
		for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
		if err := os.WriteFile(filepath.Join(t.OutputDir, name+".out"), b, 0o644); err != nil {
			return Result{Error: err.Error()}
		}
		res.OutputFiles[name+".out"] = OutputFile{Size: int64(len(b)), Digest: digestOf(b)}
	}
	return res
}

// sharedFixture is a session wired to a send queue (no server) with temporary
// directories standing in for the guest's shares.
type sharedFixture struct {
	s       *Session
	ex      *fileExec
	out     chan *agentv1.AgentMessage
	in, dst string
	ctx     context.Context
}

func newSharedFixture(t *testing.T) *sharedFixture {
	t.Helper()
	root := t.TempDir()
	f := &sharedFixture{ex: &fileExec{}, out: make(chan *agentv1.AgentMessage, 100),
		in: filepath.Join(root, "in"), dst: filepath.Join(root, "out")}
	var err error
	f.s, err = New(Config{AgentID: "shared", Dial: TCPDialer("127.0.0.1:1"), InRoot: f.in, OutRoot: f.dst,
		StagePoll: 5 * time.Millisecond, DataDir: filepath.Join(root, "data")}, f.ex)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.in, 0o755); err != nil { // the mounted input share
		t.Fatal(err)
	}
	f.s.mu.Lock()
	f.s.out = f.out
	f.s.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	f.ctx = ctx
	t.Cleanup(func() { cancel(); f.s.wg.Wait() })
	return f
}

// assign sends an assignment and checks it is acknowledged at once.
func (f *sharedFixture) assign(t *testing.T, a *agentv1.Assign) {
	t.Helper()
	f.s.assign(f.ctx, a)
	select {
	case m := <-f.out:
		if ack := m.GetAck(); ack == nil || !ack.GetAccepted() || ack.GetTaskId() != a.GetTaskId() {
			t.Fatalf("first message after the assignment = %v, want an accepting ack", m)
		}
	default:
		t.Fatal("no ack right after the assignment: the ack must not wait for staging")
	}
}

// report waits for the next report (the bound only keeps a broken session from hanging the test).
func (f *sharedFixture) report(t *testing.T) *agentv1.Report {
	t.Helper()
	for {
		select {
		case m := <-f.out:
			if r := m.GetReport(); r != nil {
				return r
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no report")
		}
	}
}

// stage writes the inputs and then the marker, the way the host does (marker last, atomically).
func (f *sharedFixture) stage(t *testing.T, lease string, files map[string][]byte, m guestabi.Marker) {
	t.Helper()
	dir := filepath.Join(f.in, lease)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, ".marker.tmp")
	if err := os.WriteFile(tmp, m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, guestabi.MarkerName)); err != nil {
		t.Fatal(err)
	}
}

func sharedAssign(id string, blobs map[string][]byte) *agentv1.Assign {
	a := &agentv1.Assign{TaskId: id, LeaseId: 7, Type: "files", Attempt: 1, DataPath: agentv1.DataPath_DATA_PATH_SHARED,
		InputBlobs: map[string]*agentv1.BlobRef{}}
	for name, b := range blobs {
		a.InputBlobs[name] = &agentv1.BlobRef{Digest: digestOf(b), Size: int64(len(b))}
	}
	return a
}

func (f *sharedFixture) leaseRunning(t *testing.T, id string) {
	t.Helper()
	for _, r := range f.s.heartbeat().GetHeartbeat().GetRunning() {
		if r.GetTaskId() == id {
			return
		}
	}
	t.Fatalf("the heartbeat does not renew task %s's lease while it waits for staging", id)
}

// TestSharedStagedOK: the task is acked before staging, its lease is renewed while it
// waits, and once the marker says OK the handler gets the staged files and an output
// directory in the output share; the report names the output files.
func TestSharedStagedOK(t *testing.T) {
	f := newSharedFixture(t)
	data := bytes.Repeat([]byte("0123456789"), 10000)
	a := sharedAssign("t1", map[string][]byte{"data": data, "empty": nil})
	f.assign(t, a)
	time.Sleep(20 * time.Millisecond) // a few polls find no marker
	f.leaseRunning(t, "t1")
	if n := len(f.ex.ran()); n != 0 {
		t.Fatalf("the handler ran %d times before the inputs were staged", n)
	}
	lease := guestabi.LeaseDir("t1", 7)
	f.stage(t, lease, map[string][]byte{"data": data, "empty": nil}, guestabi.Marker{OK: true, Sizes: map[string]int64{"data": int64(len(data)), "empty": 0}})
	r := f.report(t)
	if r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
		t.Fatalf("report = %v, want success", r)
	}
	ran := f.ex.ran()
	if len(ran) != 1 {
		t.Fatalf("handler ran %d times, want 1", len(ran))
	}
	got := ran[0]
	if want := filepath.Join(f.in, lease, "data"); got.InputFiles["data"].Path != want {
		t.Fatalf("input file path = %q, want %q", got.InputFiles["data"].Path, want)
	}
	if want := filepath.Join(f.dst, lease); got.OutputDir != want {
		t.Fatalf("output dir = %q, want %q", got.OutputDir, want)
	}
	rev := bytes.Clone(data)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	ob := r.GetOutputBlobs()["data.out"]
	if ob.GetDigest() != digestOf(rev) || ob.GetSize() != int64(len(rev)) || len(r.GetOutputBlobs()) != 2 {
		t.Fatalf("output blobs = %v, want data.out %s and empty.out", r.GetOutputBlobs(), digestOf(rev))
	}
	if b, _ := os.ReadFile(filepath.Join(f.dst, lease, "data.out")); !bytes.Equal(b, rev) {
		t.Fatal("the output file is not in the output share")
	}
	if string(r.GetOutput()) != "done" {
		t.Fatalf("inline output = %q, want done", r.GetOutput())
	}
}

// TestSharedMarkerError: a marker saying staging failed fails the task with its
// message and retryability, without running the handler.
func TestSharedMarkerError(t *testing.T) {
	for _, retry := range []bool{false, true} {
		f := newSharedFixture(t)
		id := fmt.Sprintf("err-%v", retry)
		f.assign(t, sharedAssign(id, map[string][]byte{"data": []byte("x")}))
		f.stage(t, guestabi.LeaseDir(id, 7), nil, guestabi.Marker{Error: "blob sha256:abc is gone from the server", Retryable: retry})
		r := f.report(t)
		if r.GetStatus() != agentv1.Status_STATUS_FAILED || !strings.Contains(r.GetError(), "blob sha256:abc is gone") || r.GetRetryable() != retry ||
			r.GetFailureKind() != agentv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE {
			t.Fatalf("report = %v, want failed (input_unavailable) with the marker's error, retryable=%v", r, retry)
		}
		if n := len(f.ex.ran()); n != 0 {
			t.Fatalf("the handler ran %d times after staging failed", n)
		}
	}
}

// TestSharedCancelWhileWaiting: the server's cancel stops the wait; the report says
// cancelled. The agent acts on Cancel.kind, whatever the reason text says.
func TestSharedCancelWhileWaiting(t *testing.T) {
	f := newSharedFixture(t)
	f.assign(t, sharedAssign("c1", map[string][]byte{"data": []byte("x")}))
	time.Sleep(20 * time.Millisecond)
	f.s.cancelTask(&agentv1.Cancel{TaskId: "c1", LeaseId: 7, Kind: agentv1.CancelKind_CANCEL_KIND_CLIENT, Reason: "the operator stopped it"})
	r := f.report(t)
	if r.GetStatus() != agentv1.Status_STATUS_CANCELLED || r.GetFailureKind() != agentv1.FailureKind_FAILURE_KIND_CANCELLED {
		t.Fatalf("report = %v, want cancelled (kind cancelled)", r)
	}
	if n := len(f.ex.ran()); n != 0 {
		t.Fatalf("the handler ran %d times", n)
	}
	if st := f.s.Stats(); st.Running["files"] != 0 {
		t.Fatalf("the cancelled task still holds a slot: %+v", st)
	}
}

// TestSharedDeadline: no marker before the task's deadline fails the task, retryably,
// with an error that says what it waited for.
func TestSharedDeadline(t *testing.T) {
	f := newSharedFixture(t)
	a := sharedAssign("d1", map[string][]byte{"data": []byte("x")})
	a.DeadlineUnixMs = time.Now().Add(100 * time.Millisecond).UnixMilli()
	f.assign(t, a)
	r := f.report(t)
	if r.GetStatus() != agentv1.Status_STATUS_FAILED || !r.GetRetryable() || !strings.Contains(r.GetError(), "deadline exceeded while waiting") || !strings.Contains(r.GetError(), guestabi.MarkerName) ||
		r.GetFailureKind() != agentv1.FailureKind_FAILURE_KIND_TIMEOUT {
		t.Fatalf("report = %v, want a retryable timeout naming the deadline and the marker", r)
	}
}

// TestSharedBadStaging: a missing or wrongly sized staged file fails the task
// retryably, naming the input.
func TestSharedBadStaging(t *testing.T) {
	cases := []struct {
		name   string
		staged map[string][]byte
		want   string
	}{
		{"missing", map[string][]byte{"a": []byte("aa")}, `input "b"`},
		{"short", map[string][]byte{"a": []byte("aa"), "b": []byte("b")}, "has 1 bytes, the blob has 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newSharedFixture(t)
			f.assign(t, sharedAssign("s1", map[string][]byte{"a": []byte("aa"), "b": []byte("bb")}))
			f.stage(t, guestabi.LeaseDir("s1", 7), tc.staged, guestabi.Marker{OK: true})
			r := f.report(t)
			if r.GetStatus() != agentv1.Status_STATUS_FAILED || !r.GetRetryable() || !strings.Contains(r.GetError(), tc.want) ||
				r.GetFailureKind() != agentv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE {
				t.Fatalf("report = %v, want a retryable input_unavailable failure containing %q", r, tc.want)
			}
			if n := len(f.ex.ran()); n != 0 {
				t.Fatalf("the handler ran %d times", n)
			}
		})
	}
}

// TestNoBlobsUnchanged: a task without blobs gets no files, no output directory, and
// nothing is created in the shares.
func TestNoBlobsUnchanged(t *testing.T) {
	f := newSharedFixture(t)
	f.assign(t, &agentv1.Assign{TaskId: "plain", LeaseId: 1, Type: "files", Payload: []byte("p")})
	r := f.report(t)
	if r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED || len(r.GetOutputBlobs()) != 0 {
		t.Fatalf("report = %v", r)
	}
	got := f.ex.ran()[0]
	if got.InputFiles != nil || got.OutputDir != "" || got.DataPath != agentv1.DataPath_DATA_PATH_UNSPECIFIED {
		t.Fatalf("a task without blobs got %+v", got)
	}
	for _, d := range []string{f.dst, f.s.cfg.DataDir} {
		if _, err := os.Stat(d); err == nil {
			t.Fatalf("%s was created for a task without blobs", d)
		}
	}
}

// TestSharedNoShare: without the input share (not mounted) the task fails at once,
// saying what to check, instead of waiting for a marker that cannot come.
func TestSharedNoShare(t *testing.T) {
	f := newSharedFixture(t)
	if err := os.Remove(f.in); err != nil {
		t.Fatal(err)
	}
	f.assign(t, sharedAssign("n1", map[string][]byte{"data": []byte("x")}))
	r := f.report(t)
	if r.GetStatus() != agentv1.Status_STATUS_FAILED || !strings.Contains(r.GetError(), "input share is not there") || !strings.Contains(r.GetError(), guestabi.InTag) {
		t.Fatalf("report = %v, want a failure naming the missing share", r)
	}
}

// TestCleanDataDir: at start the session removes the lease directories an earlier run
// left in its data directory, and nothing else.
func TestCleanDataDir(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"0190-task.12/in/data", "other/keep", "notes.1"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o644)
	}
	s, err := New(Config{AgentID: "clean", Dial: TCPDialer("127.0.0.1:1"), DataDir: dir}, &fileExec{})
	if err != nil {
		t.Fatal(err)
	}
	s.cleanDataDir()
	if _, err := os.Stat(filepath.Join(dir, "0190-task.12")); !os.IsNotExist(err) {
		t.Fatalf("the stale lease directory is still there: %v", err)
	}
	for _, p := range []string{"other/keep", "notes.1"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("%s, not a lease directory, was removed: %v", p, err)
		}
	}
}

// BenchmarkPrepareNoBlobs measures what the data plane adds to a task without blobs
// on a TCP agent (the server names DATA_PATH_STREAM for every task once it has a
// blob store): a lease's output directory, kept as a spare for the next such task
// when the handler left it empty, against the same task without a data path (the
// baseline).
func BenchmarkPrepareNoBlobs(b *testing.B) {
	s, err := New(Config{AgentID: "bench", Dial: TCPDialer("127.0.0.1:1"), DataDir: b.TempDir()}, &fileExec{})
	if err != nil {
		b.Fatal(err)
	}
	for _, path := range []agentv1.DataPath{agentv1.DataPath_DATA_PATH_UNSPECIFIED, agentv1.DataPath_DATA_PATH_STREAM} {
		b.Run(path.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				t := Task{ID: "bench-task", LeaseID: uint64(i + 1), DataPath: path}
				if err := s.prepare(context.Background(), &t); err != nil {
					b.Fatal(err)
				}
				s.mu.Lock()
				d := s.dataDirs[guestabi.LeaseDir(t.ID, t.LeaseID)]
				delete(s.dataDirs, guestabi.LeaseDir(t.ID, t.LeaseID))
				s.mu.Unlock()
				if d != nil {
					d.succeeded = true
					s.releaseDir(d) // what dropDataLocked does, synchronously
				}
			}
		})
	}
}
