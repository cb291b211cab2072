package sched_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/hostd/link"
	"github.com/paddockvm/paddock/sched"
)

func openFS(t testing.TB) *blob.FS {
	t.Helper()
	fs, err := blob.OpenFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func putBlob(t testing.TB, st blob.Store, data string) blob.Digest {
	t.Helper()
	d := blob.FromBytes([]byte(data))
	if _, err := st.Put(context.Background(), d, int64(len(data)), strings.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return d
}

func readBlob(t testing.TB, st blob.Store, d string) string {
	t.Helper()
	rc, err := st.Open(context.Background(), blob.Digest(d), 0)
	if err != nil {
		t.Fatalf("opening blob %s: %v", d, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// blobEcho is a handler of type "blobecho": it writes its input file "in", upper-cased,
// as the output file "out".
func blobEcho() *fakeExec {
	return &fakeExec{types: []session.TaskType{{Name: "blobecho", Concurrency: 2}}, fn: func(ctx context.Context, t session.Task) session.Result {
		in, ok := t.InputFiles["in"]
		if !ok {
			return session.Result{Error: "no input file \"in\""}
		}
		b, err := os.ReadFile(in.Path)
		if err != nil {
			return session.Result{Error: err.Error()}
		}
		if string(t.Payload) == "fail-collect" {
			b = append(b, " (collect will fail)"...)
		}
		out := bytes.ToUpper(b)
		if err := os.WriteFile(filepath.Join(t.OutputDir, "out"), out, 0o644); err != nil {
			return session.Result{Error: err.Error()}
		}
		return session.Result{Output: []byte("ok"), OutputFiles: map[string]session.OutputFile{
			"out": {Size: int64(len(out)), Digest: string(blob.FromBytes(out))}}}
	}}
}

func connectCode(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return 0
}

// unavailableStore is a blob store that cannot be reached.
type unavailableStore struct{ blob.Store }

func (unavailableStore) Stat(context.Context, blob.Digest) (blob.Info, error) {
	return blob.Info{}, blob.ErrUnavailable
}

func TestSubmitInputBlobErrors(t *testing.T) {
	ctx := context.Background()
	submitErr := func(ts *testServer, spec *paddockv1.TaskSpec) error {
		_, err := ts.tasks.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
		return err
	}
	missing := blob.FromBytes([]byte("never uploaded"))

	t.Run("no blob store", func(t *testing.T) {
		ts := startServer(t, fastConfig())
		err := submitErr(ts, &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(missing)}}})
		if connectCode(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "server.blob_store") {
			t.Fatalf("submit without a blob store: %v; want FailedPrecondition naming server.blob_store", err)
		}
	})

	cfg := fastConfig()
	fs := openFS(t)
	cfg.Blobs = fs
	ts := startServer(t, cfg)
	have := putBlob(t, fs, "present")
	tests := []struct {
		name string
		spec *paddockv1.TaskSpec
		want []string
	}{
		{"missing blob", &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{"data.bin": {Digest: string(missing)}}},
			[]string{`"data.bin"`, string(missing), "upload it first: paddock blob put FILE"}},
		{"bad name", &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{".hidden": {Digest: string(have)}}},
			[]string{`".hidden"`, "not a valid input name"}},
		{"bad digest", &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: "md5:abc"}}},
			[]string{"task.input_blobs[\"in\"].digest", "md5:abc"}},
		{"name shared with an inline input", &paddockv1.TaskSpec{Type: "x", Inputs: map[string][]byte{"in": []byte("x")},
			InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(have)}}}, []string{"inline input", "one namespace"}},
		{"wrong size", &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(have), Size: 99}}},
			[]string{"has 7 bytes, not the 99 given"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := submitErr(ts, tc.spec)
			if connectCode(err) != connect.CodeInvalidArgument {
				t.Fatalf("submit: %v; want InvalidArgument", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	t.Run("size filled in", func(t *testing.T) {
		tk := submit(t, ts, &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(have)}}})
		if ref := tk.GetSpec().GetInputBlobs()["in"]; ref.GetSize() != 7 || ref.GetDigest() != string(have) {
			t.Fatalf("stored input blob %v, want %s of 7 bytes", ref, have)
		}
	})
	t.Run("store unavailable", func(t *testing.T) {
		cfg := fastConfig()
		cfg.Blobs = unavailableStore{fs}
		ts := startServer(t, cfg)
		err := submitErr(ts, &paddockv1.TaskSpec{Type: "x", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(have)}}})
		if connectCode(err) != connect.CodeUnavailable {
			t.Fatalf("submit with the blob store down: %v; want Unavailable", err)
		}
		l, err := ts.tasks.List(ctx, connect.NewRequest(&paddockv1.ListRequest{}))
		if err != nil || len(l.Msg.GetTasks()) != 0 {
			t.Fatalf("tasks after a refused submit: %v, %v; want none", l.Msg.GetTasks(), err)
		}
	})
}

// TestStreamDataPath runs a task with a blob input on a TCP agent (DATA_PATH_STREAM):
// the client uploads over /v1/blobs (behind the client token), the agent fetches the
// input with ReadBlob and stores its output with WriteBlob, and the task's output blob
// can be downloaded.
func TestStreamDataPath(t *testing.T) {
	cfg := fastConfig()
	cfg.Dev, cfg.Token, cfg.AgentToken = false, "s3cret", "agent-s3cret"
	fs := openFS(t)
	cfg.Blobs = fs
	ts := startServer(t, cfg)
	ctx := context.Background()

	anon := blobhttp.Client{BaseURL: ts.url}
	if _, _, err := anon.Put(ctx, blob.FromBytes([]byte("x")), strings.NewReader("x"), 1, nil); !errors.Is(err, blobhttp.ErrUnauthorized) {
		t.Fatalf("upload without the token: %v; want unauthorized", err)
	}
	cl := blobhttp.Client{BaseURL: ts.url, Token: cfg.Token}
	input := strings.Repeat("hello blob ", 100_000) // ~1 MiB: several chunks
	info, _, err := cl.Put(ctx, blob.FromBytes([]byte(input)), strings.NewReader(input), int64(len(input)), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := session.New(session.Config{AgentID: "tcp1", Host: "test", Dial: session.TCPDialer(ts.agentAddr), Token: cfg.AgentToken, DataDir: t.TempDir()}, blobEcho())
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(actx) }()
	t.Cleanup(func() { cancel(); <-done })

	tk := submit(t, ts, &paddockv1.TaskSpec{Type: "blobecho", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(info.Digest)}}})
	got := wait(t, ts, tk.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("task = %v, want succeeded", got)
	}
	out := got.GetOutputBlobs()["out"]
	want := strings.ToUpper(input)
	if out.GetDigest() != string(blob.FromBytes([]byte(want))) || out.GetSize() != int64(len(want)) {
		t.Fatalf("output blob %v, want the upper-cased input", out)
	}
	var buf bytes.Buffer
	if _, err := cl.Get(ctx, blob.Digest(out.GetDigest()), &buf, 0, nil); err != nil || buf.String() != want {
		t.Fatalf("downloading the output: %d bytes, %v", buf.Len(), err)
	}
}

// rawAgent speaks the agent protocol by hand, to call the blob RPCs as it likes.
type rawAgent struct {
	id     string
	client agentv1.AgentServiceClient
	stream agentv1.AgentService_SessionClient
	msgs   chan *agentv1.ServerMessage
}

func dialRawAgent(t *testing.T, ts *testServer, id, typ string) *rawAgent {
	t.Helper()
	a, err := dialRaw(t, ts, &agentv1.Register{AgentId: id, Host: "raw", ProtocolVersion: sched.ProtocolVersion,
		Types: []*agentv1.TaskType{{Name: typ, Slots: 4}}})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	return a
}

// dialRaw opens a hand-driven agent session on its own connection and registers it
// with reg; it returns the error that refused the register.
func dialRaw(t *testing.T, ts *testServer, reg *agentv1.Register, opts ...grpc.CallOption) (*rawAgent, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, err := session.TCPDialer(ts.agentAddr)(ctx)
	if err != nil {
		t.Fatal(err)
	}
	used := false
	cc, err := grpc.NewClient("passthrough:///paddock-server", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used {
				return nil, errors.New("the raw agent dials once")
			}
			used = true
			return conn, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	a := &rawAgent{id: reg.GetAgentId(), client: agentv1.NewAgentServiceClient(cc), msgs: make(chan *agentv1.ServerMessage, 100)}
	if a.stream, err = a.client.Session(ctx, opts...); err != nil {
		return nil, err
	}
	if err := a.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Register{Register: reg}}); err != nil {
		return nil, err
	}
	m, err := a.stream.Recv()
	if err != nil {
		return nil, err
	}
	if m.GetRegistered() == nil {
		return nil, fmt.Errorf("the first message is %v, not Registered", m)
	}
	go func() {
		for {
			m, err := a.stream.Recv()
			if err != nil {
				close(a.msgs)
				return
			}
			a.msgs <- m
		}
	}()
	return a, nil
}

func (a *rawAgent) assign(t *testing.T) *agentv1.Assign {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-a.msgs:
			if !ok {
				t.Fatal("session ended while waiting for an assignment")
			}
			if as := m.GetAssign(); as != nil {
				if err := a.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: &agentv1.Ack{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: as.GetLeaseSecret(), Accepted: true}}}); err != nil {
					t.Fatal(err)
				}
				return as
			}
		case <-timeout:
			t.Fatal("no assignment within 10s")
		}
	}
}

func (a *rawAgent) report(t *testing.T, r *agentv1.Report) *agentv1.ReportAck {
	t.Helper()
	if err := a.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: r}}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-a.msgs:
			if !ok {
				t.Fatal("session ended while waiting for a report ack")
			}
			if ack := m.GetReportAck(); ack != nil && ack.GetTaskId() == r.GetTaskId() {
				return ack
			}
		case <-timeout:
			t.Fatal("no report ack within 10s")
		}
	}
}

func (a *rawAgent) read(agentID string, as *agentv1.Assign, d string, off int64) (string, error) {
	st, err := a.client.ReadBlob(context.Background(), &agentv1.ReadBlobRequest{AgentId: agentID, TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: as.GetLeaseSecret(), Digest: d, Offset: off})
	if err != nil {
		return "", err
	}
	var b []byte
	for {
		c, err := st.Recv()
		if err == io.EOF {
			return string(b), nil
		}
		if err != nil {
			return string(b), err
		}
		b = append(b, c.GetData()...)
	}
}

func (a *rawAgent) write(as *agentv1.Assign, name string, data []byte, size int64) error {
	st, err := a.client.WriteBlob(context.Background())
	if err != nil {
		return err
	}
	if err := st.Send(&agentv1.WriteBlobRequest{Header: &agentv1.WriteBlobHeader{AgentId: a.id, TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: as.GetLeaseSecret(),
		Name: name, Digest: string(blob.FromBytes(data)), Size: size}, Data: data}); err != nil && err != io.EOF {
		return err
	}
	_, err = st.CloseAndRecv()
	return err
}

var emptySHA = func() string { s := sha256.Sum256(nil); return hex.EncodeToString(s[:]) }()

func success(as *agentv1.Assign, outs map[string]*agentv1.BlobRef) *agentv1.Report {
	return &agentv1.Report{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: as.GetLeaseSecret(), Status: agentv1.Status_STATUS_SUCCEEDED, Sha256: emptySHA, OutputBlobs: outs}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("%s: %v; want %v", what, err, want)
	}
}

// TestAgentBlobRPCs checks what the agent port's ReadBlob and WriteBlob allow, and
// what a report's output blobs must satisfy.
func TestAgentBlobRPCs(t *testing.T) {
	cfg := rawAgentConfig()
	cfg.HeartbeatInterval, cfg.LeaseTTL = 5*time.Second, 30*time.Second // the raw agents do not heartbeat
	cfg.MaxOutputBytes = 1000
	fs := openFS(t)
	cfg.Blobs = fs
	ts := startServer(t, cfg)
	in := putBlob(t, fs, "hello input")
	other := putBlob(t, fs, "not an input")
	raw := dialRawAgent(t, ts, "raw", "blobraw")
	intruder := dialRawAgent(t, ts, "intruder", "nothing")

	spec := func() *paddockv1.TaskSpec {
		return &paddockv1.TaskSpec{Type: "blobraw", MaxAttempts: 1, InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(in)}}}
	}
	tk := submit(t, ts, spec())
	as := raw.assign(t)
	if as.GetTaskId() != tk.GetId() || as.GetDataPath() != agentv1.DataPath_DATA_PATH_STREAM || as.GetMaxOutputBytes() != 1000 ||
		as.GetInputBlobs()["in"].GetDigest() != string(in) || as.GetInputBlobs()["in"].GetSize() != 11 {
		t.Fatalf("assign = %v; want task %s on DATA_PATH_STREAM, max 1000 output bytes, input \"in\" of 11 bytes", as, tk.GetId())
	}
	if got, err := raw.read("raw", as, string(in), 0); err != nil || got != "hello input" {
		t.Fatalf("ReadBlob = %q, %v", got, err)
	}
	if got, err := raw.read("raw", as, string(in), 6); err != nil || got != "input" {
		t.Fatalf("ReadBlob from offset 6 = %q, %v", got, err)
	}
	_, err := raw.read("raw", as, string(other), 0)
	wantCode(t, "ReadBlob of a blob that is not an input", err, codes.PermissionDenied)
	_, err = intruder.read("intruder", as, string(in), 0)
	wantCode(t, "ReadBlob of another agent's task", err, codes.PermissionDenied)
	_, err = intruder.read("raw", as, string(in), 0)
	wantCode(t, "ReadBlob claiming another agent's id on the intruder's connection", err, codes.PermissionDenied)
	stale := &agentv1.Assign{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId() + 1}
	_, err = raw.read("raw", stale, string(in), 0)
	wantCode(t, "ReadBlob under a lease that is not current", err, codes.FailedPrecondition)

	result := []byte("the result")
	if err := raw.write(as, "out", result, int64(len(result))); err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	err = raw.write(as, "big", make([]byte, 10), 2000)
	wantCode(t, "WriteBlob over server.max_output_bytes", err, codes.ResourceExhausted)
	err = raw.write(as, "liar", []byte("abc"), 4)
	wantCode(t, "WriteBlob whose size is wrong", err, codes.InvalidArgument)

	ack := raw.report(t, success(as, map[string]*agentv1.BlobRef{"out": {Digest: string(blob.FromBytes(result)), Size: int64(len(result))}}))
	if ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
		t.Fatalf("report ack %v", ack)
	}
	got := wait(t, ts, tk.GetId(), 10*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED || got.GetOutputBlobs()["out"].GetDigest() != string(blob.FromBytes(result)) {
		t.Fatalf("task = %v; want succeeded with output blob out", got)
	}
	if s := readBlob(t, fs, got.GetOutputBlobs()["out"].GetDigest()); s != string(result) {
		t.Fatalf("output blob holds %q", s)
	}
	_, err = raw.read("raw", as, string(in), 0)
	wantCode(t, "ReadBlob after the task finished", err, codes.FailedPrecondition)
	err = raw.write(as, "late", []byte("x"), 1)
	wantCode(t, "WriteBlob after the task finished", err, codes.FailedPrecondition)
	// A duplicate report changes nothing.
	if ack := raw.report(t, success(as, nil)); ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_DUPLICATE {
		t.Fatalf("repeated report: %v, want duplicate", ack)
	}

	// Output files over the limit: a fatal failure naming it.
	tk = submit(t, ts, spec())
	as = raw.assign(t)
	raw.report(t, success(as, map[string]*agentv1.BlobRef{"a": {Digest: string(in), Size: 600}, "b": {Digest: string(other), Size: 600}}))
	got = wait(t, ts, tk.GetId(), 10*time.Second)
	if got.GetState() != paddockv1.State_STATE_FAILED || !strings.Contains(got.GetError(), "server.max_output_bytes") {
		t.Fatalf("task with 1200 bytes of output files = %v; want failed naming server.max_output_bytes", got)
	}

	// An output the agent never stored: a retryable failure naming it.
	tk = submit(t, ts, spec())
	as = raw.assign(t)
	ghost := blob.FromBytes([]byte("never written"))
	raw.report(t, success(as, map[string]*agentv1.BlobRef{"ghost": {Digest: string(ghost), Size: 13}}))
	got = wait(t, ts, tk.GetId(), 10*time.Second)
	if got.GetState() != paddockv1.State_STATE_DEAD || !strings.Contains(got.GetError(), `"ghost"`) || !got.GetAttempts()[0].GetRetryable() {
		t.Fatalf("task reporting an output it never stored = %v; want a retryable failure naming it (dead: one attempt)", got)
	}
}

// stagingHost is a fake host daemon with the "stage" capability: it stages input blobs
// into a guest's input share (read over the cluster port), and collects output files
// from its output share into the server's blob store.
type stagingHost struct {
	*fakeHost
	inRoot, outRoot string
	sendMu          sync.Mutex
	failCollect     func(*hostv1.Collect) string
	collects        []*hostv1.Collect // guarded by sendMu
}

// lastCollect returns the last Collect the host got (nil: none).
func (sh *stagingHost) lastCollect() *hostv1.Collect {
	sh.sendMu.Lock()
	defer sh.sendMu.Unlock()
	if len(sh.collects) == 0 {
		return nil
	}
	return sh.collects[len(sh.collects)-1]
}

func (sh *stagingHost) sendMsg(m *hostv1.HostMessage) {
	sh.sendMu.Lock()
	defer sh.sendMu.Unlock()
	sh.ctl.Send(m)
}

func (sh *stagingHost) handle(h *fakeHost, m *hostv1.ServerMessage) {
	ctx := context.Background()
	if e := m.GetTaskEvent(); e != nil && e.GetKind() == hostv1.TaskEvent_KIND_STARTED && len(e.GetInputs()) > 0 {
		go func() {
			dir := filepath.Join(sh.inRoot, guestabi.LeaseDir(e.GetTaskId(), e.GetLeaseId()))
			marker := guestabi.Marker{OK: true, Sizes: map[string]int64{}}
			var fetched int64
			err := os.MkdirAll(dir, 0o755)
			for name, ref := range e.GetInputs() {
				if err != nil {
					break
				}
				var st hostv1.HostService_ReadBlobClient
				if st, err = h.client.ReadBlob(ctx, &hostv1.ReadBlobRequest{Digest: ref.GetDigest()}); err != nil {
					break
				}
				var b []byte
				for {
					c, rerr := st.Recv()
					if rerr == io.EOF {
						break
					}
					if rerr != nil {
						err = rerr
						break
					}
					b = append(b, c.GetData()...)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
				}
				marker.Sizes[name] = int64(len(b))
				fetched += int64(len(b))
			}
			staged := &hostv1.Staged{Guest: e.GetGuest(), TaskId: e.GetTaskId(), LeaseId: e.GetLeaseId(), FetchedBytes: fetched}
			if err != nil {
				marker, staged.Error = guestabi.Marker{Error: err.Error(), Retryable: true}, err.Error()
			}
			os.WriteFile(filepath.Join(dir, guestabi.MarkerName), marker.Encode(), 0o644)
			sh.sendMsg(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Staged{Staged: staged}})
		}()
	}
	if c := m.GetCollect(); c != nil {
		sh.sendMu.Lock()
		sh.collects = append(sh.collects, c)
		sh.sendMu.Unlock()
		go func() {
			res := &hostv1.Collected{RequestId: c.GetRequestId()}
			if msg := sh.failCollect(c); msg != "" {
				res.Error = msg
			}
			for name, ref := range c.GetOutputs() {
				if res.Error != "" {
					break
				}
				b, err := os.ReadFile(filepath.Join(sh.outRoot, guestabi.LeaseDir(c.GetTaskId(), c.GetLeaseId()), name))
				if err == nil {
					err = writeHostBlob(ctx, h.client, ref, b)
				}
				if err != nil {
					res.Error, res.Retryable = err.Error(), true
				}
			}
			sh.sendMsg(&hostv1.HostMessage{Msg: &hostv1.HostMessage_Collected{Collected: res}})
		}()
	}
}

func writeHostBlob(ctx context.Context, c hostv1.HostServiceClient, ref *hostv1.BlobRef, b []byte) error {
	st, err := c.WriteBlob(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&hostv1.WriteBlobRequest{Header: ref}); err != nil && err != io.EOF {
		return err
	}
	for len(b) > 0 {
		n := min(len(b), 100)
		if err := st.Send(&hostv1.WriteBlobRequest{Data: b[:n]}); err != nil {
			if err == io.EOF {
				break
			}
			return err
		}
		b = b[n:]
	}
	_, err = st.CloseAndRecv()
	return err
}

// TestSharedDataPath runs blob tasks on a guest whose host stages (DATA_PATH_SHARED):
// the host gets the inputs with the task's KIND_STARTED event, the server asks it to
// collect the outputs and records the success only after its Collected; a host's
// collect error fails the attempt with the host's message.
func TestSharedDataPath(t *testing.T) {
	cfg := rawAgentConfig()
	fs := openFS(t)
	cfg.Blobs = fs
	cs := startClusterServer(t, cfg)
	sh := &stagingHost{inRoot: t.TempDir(), outRoot: t.TempDir(), failCollect: func(c *hostv1.Collect) string {
		if c.GetOutputs()["out"].GetSize() > 100 {
			return "disk on fire"
		}
		return ""
	}}
	h, err := connectHostWith(t, cs, "h1", "h1", hostOpts{caps: []string{sched.CapStage}, handle: sh.handle})
	if err != nil {
		t.Fatal(err)
	}
	sh.fakeHost = h
	s, err := session.New(session.Config{AgentID: "g1", Host: "g1", InRoot: sh.inRoot, OutRoot: sh.outRoot, ReconnectMin: 20 * time.Millisecond,
		Dial: func(ctx context.Context) (net.Conn, error) { return link.OpenRelay(ctx, h.client, "g1", "p") }}, blobEcho())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	in := putBlob(t, fs, "staged input")
	tk := submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "blobecho", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(in)}}})
	got := wait(t, cs.testServer, tk.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
		t.Fatalf("task = %v, want succeeded", got)
	}
	out := got.GetOutputBlobs()["out"]
	if s := readBlob(t, fs, out.GetDigest()); s != "STAGED INPUT" {
		t.Fatalf("collected output %q, want STAGED INPUT", s)
	}
	waitFor(t, "the task's KIND_FINISHED event", 5*time.Second, func() bool { return len(h.eventsFor("g1")) >= 2 })
	h.mu.Lock()
	var started, finished *hostv1.TaskEvent
	for _, e := range h.events {
		switch {
		case e.GetTaskId() != tk.GetId():
		case e.GetKind() == hostv1.TaskEvent_KIND_STARTED:
			started = e
		case e.GetKind() == hostv1.TaskEvent_KIND_FINISHED:
			finished = e
		}
	}
	h.mu.Unlock()
	if started.GetLeaseId() != got.GetLeaseId() || started.GetInputs()["in"].GetDigest() != string(in) || started.GetInputs()["in"].GetSize() != 12 {
		t.Fatalf("KIND_STARTED = %v; want lease %d and input \"in\" (%s, 12 bytes)", started, got.GetLeaseId(), in)
	}
	if finished.GetLeaseId() != got.GetLeaseId() {
		t.Fatalf("KIND_FINISHED = %v; want lease %d", finished, got.GetLeaseId())
	}
	// The tenant and class choose the host's bandwidth class of the transfers.
	if started.GetTenant() != "default" || started.GetTaskClass() != "batch" {
		t.Errorf("KIND_STARTED carries tenant %q and class %q; want default and batch", started.GetTenant(), started.GetTaskClass())
	}
	if c := sh.lastCollect(); c.GetTenant() != "default" || c.GetTaskClass() != "batch" {
		t.Errorf("Collect carries tenant %q and class %q; want default and batch", c.GetTenant(), c.GetTaskClass())
	}

	// The host fails to collect: the attempt fails with its message.
	big := putBlob(t, fs, strings.Repeat("x", 200))
	tk = submit(t, cs.testServer, &paddockv1.TaskSpec{Type: "blobecho", MaxAttempts: 1, InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(big)}}})
	got = wait(t, cs.testServer, tk.GetId(), 30*time.Second)
	if got.GetState() != paddockv1.State_STATE_FAILED || !strings.Contains(got.GetError(), "disk on fire") || !strings.Contains(got.GetError(), "h1") {
		t.Fatalf("task whose collect failed = %v; want failed (not retryable) with the host's message", got)
	}
	resp, err := httpClient.Get(cs.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`paddock_staged_total{result="ok"} 2`, `paddock_collects_total{result="ok"} 1`, `paddock_collects_total{result="error"} 1`,
		`paddock_blob_bytes_total{direction="out",port="cluster"} 212`, `paddock_blob_bytes_total{direction="in",port="cluster"} 12`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestCollectGarbage checks retention: an old blob no task uses is deleted; one a live
// task uses, or one of a task that finished within the retention, is kept.
func TestCollectGarbage(t *testing.T) {
	cfg := fastConfig()
	fs := openFS(t)
	cfg.Blobs = fs
	ts := startServer(t, cfg)
	ctx := context.Background()
	unused := putBlob(t, fs, "nobody needs me")
	used := putBlob(t, fs, "a queued task needs me")
	tk := submit(t, ts, &paddockv1.TaskSpec{Type: "nobody-serves-this", InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(used)}}})

	if n, err := ts.srv.CollectGarbage(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("CollectGarbage now = %d, %v; want nothing deleted (all blobs are new)", n, err)
	}
	later := time.Now().Add(48 * time.Hour) // past the default 24h retention
	if n, err := ts.srv.CollectGarbage(ctx, later); err != nil || n != 1 {
		t.Fatalf("CollectGarbage in 48h = %d, %v; want 1 deleted", n, err)
	}
	if _, err := fs.Stat(ctx, unused); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("the unused blob: %v; want deleted", err)
	}
	if _, err := fs.Stat(ctx, used); err != nil {
		t.Fatalf("the queued task's input was deleted: %v", err)
	}
	// Cancelled now: its input is kept while the task finished within the retention.
	if _, err := ts.tasks.Cancel(ctx, connect.NewRequest(&paddockv1.CancelRequest{Id: tk.GetId()})); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-72 * time.Hour)
	if err := os.Chtimes(fs.Path(used), old, old); err != nil { // written long ago
		t.Fatal(err)
	}
	if n, err := ts.srv.CollectGarbage(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("CollectGarbage just after the cancel = %d, %v; want nothing deleted (the task finished within the retention)", n, err)
	}
	if n, err := ts.srv.CollectGarbage(ctx, later); err != nil || n != 1 {
		t.Fatalf("CollectGarbage 48h after the cancel = %d, %v; want the input deleted", n, err)
	}
}

// TestRealBlobEcho runs blob tasks end to end with real processes: the server
// (testserver with a filesystem blob store) and two agents (testagent serving
// test.blobecho over DATA_PATH_STREAM); the server is then killed (kill -9) and
// restarted, and the tasks' output blobs are still recorded and downloadable.
func TestRealBlobEcho(t *testing.T) {
	needBins(t)
	dir := t.TempDir()
	db, blobDir := filepath.Join(dir, "paddock.db"), filepath.Join(dir, "blobs")
	agentAddr, clientAddr := freeAddr(t), freeAddr(t)
	startSrv := func() *proc {
		p, _ := startProc(t, "server", "TESTSERVER READY", bins.server, "-db", db, "-blob-dir", blobDir, "-agent-listen", agentAddr, "-client-listen", clientAddr)
		return p
	}
	srv := startSrv()
	for _, id := range []string{"b1", "b2"} {
		startProc(t, "agent-"+id, "TESTAGENT READY", bins.agent, "-server", agentAddr, "-id", id, "-blobecho", "-data-dir", filepath.Join(dir, id),
			"-handler", "testhandler="+bins.testhandler)
	}
	ctx := context.Background()
	cl := blobhttp.Client{BaseURL: "http://" + clientAddr}
	client := paddockv1connect.NewTaskServiceClient(&httpClient, "http://"+clientAddr)
	var ids []string
	want := map[string]string{}
	for i := 0; i < 6; i++ {
		input := strings.Repeat(fmt.Sprintf("input %d of a real blob task. ", i), 20_000) // ~600 KiB
		info, _, err := cl.Put(ctx, blob.FromBytes([]byte(input)), strings.NewReader(input), int64(len(input)), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := client.Submit(ctx, connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.blobecho",
			InputBlobs: map[string]*paddockv1.BlobRef{"in": {Digest: string(info.Digest)}}}}))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Msg.GetTask().GetId())
		want[r.Msg.GetTask().GetId()] = strings.ToUpper(input)
	}
	check := func(when string) {
		t.Helper()
		for _, id := range ids {
			r, err := client.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: 60_000}))
			if err != nil {
				t.Fatal(err)
			}
			tk := r.Msg.GetTask()
			if tk.GetState() != paddockv1.State_STATE_SUCCEEDED {
				t.Fatalf("%s: task %s = %v, want succeeded", when, id, tk)
			}
			var buf bytes.Buffer
			if _, err := cl.Get(ctx, blob.Digest(tk.GetOutputBlobs()["out"].GetDigest()), &buf, 0, nil); err != nil || buf.String() != want[id] {
				t.Fatalf("%s: output of task %s: %d bytes, %v; want the upper-cased input", when, id, buf.Len(), err)
			}
		}
	}
	check("before the restart")
	srv.kill9()
	startSrv()
	check("after kill -9 and restart")
}
