package session

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/api/guestabi"
)

// blobServer is a fake AgentService (plain gRPC over TCP) that assigns tasks, serves
// input blobs — cutting the first transfer of each blob short to test resuming — and
// stores output blobs, verifying them as the real server does.
type blobServer struct {
	agentv1.UnimplementedAgentServiceServer
	blobs   map[string][]byte
	cutAt   int64
	assign  chan *agentv1.Assign
	reports chan *agentv1.Report
	// cutConn, when set, is called where a transfer is cut: it breaks the agent's
	// whole connection rather than one stream.
	cutConn func()
	// failWrites is how many WriteBlob calls fail (Unavailable) before any succeeds.
	failWrites int

	mu      sync.Mutex
	cut     map[string]bool
	offsets []int64
	stored  map[string][]byte // by output name
}

func (b *blobServer) Session(st agentv1.AgentService_SessionServer) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	if err := st.Send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Registered{Registered: &agentv1.Registered{HeartbeatIntervalMs: 50}}}); err != nil {
		return err
	}
	in := make(chan *agentv1.AgentMessage)
	go func() {
		defer close(in)
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			in <- m
		}
	}()
	for {
		select {
		case a := <-b.assign:
			if err := st.Send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_Assign{Assign: a}}); err != nil {
				return err
			}
		case m, ok := <-in:
			if !ok {
				return nil
			}
			if r := m.GetReport(); r != nil {
				b.reports <- r
				ack := &agentv1.ReportAck{TaskId: r.GetTaskId(), LeaseId: r.GetLeaseId(), Outcome: agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED}
				if err := st.Send(&agentv1.ServerMessage{Msg: &agentv1.ServerMessage_ReportAck{ReportAck: ack}}); err != nil {
					return err
				}
			}
		case <-st.Context().Done():
			return nil
		}
	}
}

func (b *blobServer) ReadBlob(req *agentv1.ReadBlobRequest, st agentv1.AgentService_ReadBlobServer) error {
	data, ok := b.blobs[req.GetDigest()]
	if !ok {
		return status.Errorf(codes.NotFound, "blob %s is not in the store", req.GetDigest())
	}
	b.mu.Lock()
	b.offsets = append(b.offsets, req.GetOffset())
	cut := !b.cut[req.GetDigest()] && int64(len(data)) > b.cutAt
	b.cut[req.GetDigest()] = true
	b.mu.Unlock()
	end := int64(len(data))
	if cut {
		end = b.cutAt
	}
	for off := req.GetOffset(); off < end; off += 64 << 10 {
		if err := st.Send(&agentv1.BlobChunk{Data: data[off:min(off+64<<10, end)]}); err != nil {
			return err
		}
	}
	if cut {
		if b.cutConn != nil {
			b.cutConn()
		}
		return status.Error(codes.Unavailable, "connection cut by the test")
	}
	return nil
}

func (b *blobServer) WriteBlob(st agentv1.AgentService_WriteBlobServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "no header")
	}
	b.mu.Lock()
	fail := b.failWrites > 0
	b.failWrites--
	b.mu.Unlock()
	if fail {
		return status.Error(codes.Unavailable, "store briefly down (the test)")
	}
	var buf bytes.Buffer
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(m.GetData()) > ChunkSize {
			return status.Errorf(codes.InvalidArgument, "chunk of %d bytes", len(m.GetData()))
		}
		buf.Write(m.GetData())
	}
	sum := sha256.Sum256(buf.Bytes())
	if d := "sha256:" + hex.EncodeToString(sum[:]); d != h.GetDigest() || int64(buf.Len()) != h.GetSize() {
		return status.Errorf(codes.InvalidArgument, "got %s (%d bytes), header says %s (%d)", d, buf.Len(), h.GetDigest(), h.GetSize())
	}
	b.mu.Lock()
	b.stored[h.GetName()] = buf.Bytes()
	b.mu.Unlock()
	return st.SendAndClose(&agentv1.WriteBlobResponse{Digest: h.GetDigest(), Size: h.GetSize()})
}

func startBlobServer(t *testing.T, blobs map[string][]byte) (*blobServer, string) {
	t.Helper()
	b := &blobServer{blobs: blobs, cutAt: 300 << 10, assign: make(chan *agentv1.Assign, 10), reports: make(chan *agentv1.Report, 10),
		cut: map[string]bool{}, stored: map[string][]byte{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(gs, b)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return b, l.Addr().String()
}

// conns records the connections an agent dialed, so a test can break them.
type conns struct {
	mu   sync.Mutex
	list []net.Conn
}

func (c *conns) dial(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.mu.Lock()
			c.list = append(c.list, conn)
			c.mu.Unlock()
		}
		return conn, err
	}
}

func (c *conns) breakAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.list {
		conn.Close()
	}
}

func (c *conns) dialed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.list)
}

func startStreamAgent(t *testing.T, addr string, ex Executor) *Session {
	t.Helper()
	return startStreamAgentWith(t, (&conns{}).dial(addr), ex)
}

func startStreamAgentWith(t *testing.T, dial func(context.Context) (net.Conn, error), ex Executor) *Session {
	t.Helper()
	s, err := New(Config{AgentID: "stream", DataDir: t.TempDir(), ReconnectMin: 10 * time.Millisecond, Dial: dial}, ex)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func nextReport(t *testing.T, b *blobServer) *agentv1.Report {
	t.Helper()
	select {
	case r := <-b.reports:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no report")
		return nil
	}
}

// TestStreamInputsAndOutputs: a DATA_PATH_STREAM task fetches its inputs with
// ReadBlob (resuming after the stream is cut), the handler reads them from the data
// directory and writes outputs there, the agent stores them with WriteBlob in
// chunks of at most 256 KiB (again when a call fails) before it reports them, and once the server acknowledges
// the report the lease's data directory is gone.
func TestStreamInputsAndOutputs(t *testing.T) {
	big := make([]byte, 1<<20+12345)
	for i := range big {
		big[i] = byte(i * 7)
	}
	small := []byte("small input")
	b, addr := startBlobServer(t, map[string][]byte{digestOf(big): big, digestOf(small): small})
	b.failWrites = 1 // and the first output's first WriteBlob fails
	ex := &fileExec{}
	s := startStreamAgent(t, addr, ex)
	b.assign <- &agentv1.Assign{TaskId: "s1", LeaseId: 3, Type: "files", DataPath: agentv1.DataPath_DATA_PATH_STREAM,
		InputBlobs: map[string]*agentv1.BlobRef{"big": {Digest: digestOf(big), Size: int64(len(big))}, "small": {Digest: digestOf(small), Size: int64(len(small))}}}
	r := nextReport(t, b)
	if r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
		t.Fatalf("report = %v", r)
	}
	got := ex.ran()[0]
	lease := filepath.Join(s.cfg.DataDir, guestabi.LeaseDir("s1", 3))
	if got.InputFiles["big"].Path != filepath.Join(lease, "in", "big") || got.OutputDir != filepath.Join(lease, "out") {
		t.Fatalf("task files = %+v, out %q; want them under %s", got.InputFiles, got.OutputDir, lease)
	}
	b.mu.Lock()
	offsets, stored := b.offsets, b.stored
	b.mu.Unlock()
	resumed := false
	for _, o := range offsets {
		resumed = resumed || o == b.cutAt
	}
	if !resumed {
		t.Fatalf("ReadBlob offsets %v: the cut transfer was not resumed at %d", offsets, b.cutAt)
	}
	for name, ob := range r.GetOutputBlobs() {
		if digestOf(stored[name]) != ob.GetDigest() || int64(len(stored[name])) != ob.GetSize() {
			t.Fatalf("output %s: report says %v, the server stored %d bytes %s", name, ob, len(stored[name]), digestOf(stored[name]))
		}
	}
	if len(r.GetOutputBlobs()) != 2 || len(stored) != 2 {
		t.Fatalf("output blobs %v, stored %d; want 2 each", r.GetOutputBlobs(), len(stored))
	}
	for i := 0; ; i++ { // removed after the ack (asynchronously)
		if _, err := os.Stat(lease); errors.Is(err, os.ErrNotExist) {
			break
		}
		if i == 1000 {
			t.Fatalf("the lease's data directory %s is still there after the report was acknowledged", lease)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamMissingBlob: an input the server does not have fails the task, not
// retryably, naming the input.
func TestStreamMissingBlob(t *testing.T) {
	b, addr := startBlobServer(t, map[string][]byte{})
	ex := &fileExec{}
	startStreamAgent(t, addr, ex)
	gone := digestOf([]byte("gone"))
	b.assign <- &agentv1.Assign{TaskId: "m1", LeaseId: 1, Type: "files", DataPath: agentv1.DataPath_DATA_PATH_STREAM,
		InputBlobs: map[string]*agentv1.BlobRef{"lost": {Digest: gone, Size: 4}}}
	r := nextReport(t, b)
	if r.GetStatus() != agentv1.Status_STATUS_FAILED || r.GetRetryable() || !strings.Contains(r.GetError(), `input "lost"`) || !strings.Contains(r.GetError(), gone) ||
		r.GetFailureKind() != agentv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE {
		t.Fatalf("report = %v, want a non-retryable input_unavailable failure naming the input and its digest", r)
	}
	if n := len(ex.ran()); n != 0 {
		t.Fatalf("the handler ran %d times", n)
	}
}

// TestStreamSpareDir: a task without input blobs whose handler writes no files leaves
// an empty directory that the next such task reuses instead of making its own.
func TestStreamSpareDir(t *testing.T) {
	b, addr := startBlobServer(t, map[string][]byte{})
	ex := &fileExec{}
	s := startStreamAgent(t, addr, ex)
	for i := 1; i <= 3; i++ {
		b.assign <- &agentv1.Assign{TaskId: "p" + string(rune('0'+i)), LeaseId: 1, Type: "files", DataPath: agentv1.DataPath_DATA_PATH_STREAM}
		if r := nextReport(t, b); r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
			t.Fatalf("report = %v", r)
		}
		for j := 0; ; j++ { // wait until the directory is released (asynchronously, after the ack)
			s.mu.Lock()
			n := len(s.spare)
			s.mu.Unlock()
			if n == 1 {
				break
			}
			if j == 1000 {
				t.Fatalf("after task %d: %d spare directories, want 1", i, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ran := ex.ran()
	if ran[0].OutputDir == "" || ran[1].OutputDir != ran[0].OutputDir || ran[2].OutputDir != ran[0].OutputDir {
		t.Fatalf("output dirs %q %q %q: want the first one reused", ran[0].OutputDir, ran[1].OutputDir, ran[2].OutputDir)
	}
	if ents, _ := os.ReadDir(s.cfg.DataDir); len(ents) != 1 {
		t.Fatalf("data dir holds %d entries, want the 1 spare", len(ents))
	}
}

// TestStreamResumeAcrossReconnect: when the agent's connection to the server breaks
// in the middle of an input, the session reconnects and the fetch resumes where it
// stopped on the new connection.
func TestStreamResumeAcrossReconnect(t *testing.T) {
	big := bytes.Repeat([]byte("reconnect "), 100_000)
	b, addr := startBlobServer(t, map[string][]byte{digestOf(big): big})
	c := &conns{}
	var dataDir atomic.Pointer[string]
	// Break the connection once the agent has written some of the input: all of the
	// cut's 300 KiB may still sit in the agent's HTTP/2 receive window (4 MiB) when the
	// server returns, and a break then loses it all (a resume at 0, correctly).
	b.cutConn = func() {
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && dataDir.Load() != nil && !wroteSome(*dataDir.Load()); time.Sleep(5 * time.Millisecond) {
		}
		c.breakAll()
	}
	ex := &fileExec{}
	s := startStreamAgentWith(t, c.dial(addr), ex)
	dataDir.Store(&s.cfg.DataDir)
	b.assign <- &agentv1.Assign{TaskId: "r1", LeaseId: 1, Type: "files", DataPath: agentv1.DataPath_DATA_PATH_STREAM,
		InputBlobs: map[string]*agentv1.BlobRef{"big": {Digest: digestOf(big), Size: int64(len(big))}}}
	r := nextReport(t, b)
	if r.GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
		t.Fatalf("report = %v", r)
	}
	if n := c.dialed(); n < 2 {
		t.Fatalf("the agent dialed %d times; the test meant to break its connection", n)
	}
	b.mu.Lock()
	offsets := b.offsets
	b.mu.Unlock()
	if len(offsets) != 2 || offsets[0] != 0 || offsets[1] == 0 || offsets[1] > b.cutAt {
		t.Fatalf("ReadBlob offsets %v: want a start at 0 and one resume after the break", offsets)
	}
}

// wroteSome reports whether any file under dir holds at least one byte.
func wroteSome(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil && fi.Size() > 0 {
				found = true
				return filepath.SkipAll
			}
		}
		return nil
	})
	return found
}
