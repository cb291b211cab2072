package sched_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/agent/session"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/stream"
	"github.com/paddockvm/paddock/sched/tenant"
)

// TestStreamByteBudget: a stream of large items that never complete (no agent serves
// the type) holds at most sched.MaxStreamBytes of payload in the server, however large
// its window: the server stops reading once the budget is taken.
func TestStreamByteBudget(t *testing.T) {
	ts := startServer(t, fastConfig())
	const item = 3 << 20
	want := uint64(sched.MaxStreamBytes / item)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bs := streamClient(ts).Stream(ctx)
	if err := bs.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: &paddockv1.StreamOpen{Type: "test.nobody", Window: 4096, Transient: true}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Receive(); err != nil {
		t.Fatal(err)
	}
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 3*int(want); i++ { // incompressible, so flow control sees every byte
			p := make([]byte, item)
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			if bs.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Item{Item: &paddockv1.StreamItem{Payload: p}}}) != nil {
				return
			}
		}
	}()
	var si sched.StreamInfo
	last, since := uint64(0), time.Now()
	for end := time.Now().Add(3 * time.Minute); time.Since(since) < 2*time.Second || si.Admitted == 0; time.Sleep(50 * time.Millisecond) {
		if ss := ts.srv.Streams(); len(ss) == 1 {
			si = ss[0]
		}
		if si.Admitted != last {
			last, since = si.Admitted, time.Now()
		}
		if time.Now().After(end) {
			t.Fatalf("the stream kept admitting for 3 minutes: %+v", si)
		}
	}
	t.Logf("items of %d bytes, window 4096: the server admitted %d and stopped (budget %d bytes)", item, si.Admitted, sched.MaxStreamBytes)
	if si.Admitted != want {
		t.Fatalf("admitted %d items of %d bytes; want %d (sched.MaxStreamBytes = %d)", si.Admitted, item, want, sched.MaxStreamBytes)
	}
}

// TestStreamsPerTenant: a tenant may hold sched.MaxTenantStreams streams open; one more
// is refused with a message naming the limit, and closing one makes room.
func TestStreamsPerTenant(t *testing.T) {
	ts := startServer(t, fastConfig())
	type bidi = *connect.BidiStreamForClient[paddockv1.StreamRequest, paddockv1.StreamResponse]
	open := func() (bidi, error) {
		bs := streamClient(ts).Stream(context.Background())
		if err := bs.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: &paddockv1.StreamOpen{Type: "test.echo", Window: 4}}}); err != nil {
			return bs, err
		}
		_, err := bs.Receive()
		return bs, err
	}
	streams := make([]bidi, sched.MaxTenantStreams)
	for i := range streams {
		bs, err := open()
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, sched.MaxTenantStreams, err)
		}
		streams[i] = bs
		defer func() { _ = bs.CloseRequest(); _ = bs.CloseResponse() }()
	}
	_, err := open()
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "MaxTenantStreams") {
		t.Fatalf("stream %d: got %v; want ResourceExhausted naming sched.MaxTenantStreams", sched.MaxTenantStreams+1, err)
	}
	// The client closes its side of one stream: the server ends it (nothing outstanding).
	// Then a stream whose window would pass the tenant's items over all its streams is
	// refused naming the field and the limit (31 × 4 are open).
	_ = streams[0].CloseRequest()
	deadline := time.Now().Add(time.Minute)
	for {
		bs, err := open()
		if err == nil {
			_ = bs.CloseRequest()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a stream, a new one is still refused: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStreamTenantItems: the windows of one tenant's open streams together are bounded
// (sched.MaxTenantStreamItems): past it a stream is refused naming the field and the
// limit; closing one makes room.
func TestStreamTenantItems(t *testing.T) {
	ts := startServer(t, fastConfig())
	type bidi = *connect.BidiStreamForClient[paddockv1.StreamRequest, paddockv1.StreamResponse]
	open := func(w uint32) (bidi, error) {
		bs := streamClient(ts).Stream(context.Background())
		if err := bs.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: &paddockv1.StreamOpen{Type: "test.echo", Window: w}}}); err != nil {
			return bs, err
		}
		_, err := bs.Receive()
		return bs, err
	}
	n := sched.MaxTenantStreamItems / sched.MaxStreamWindow
	var first bidi
	for i := 0; i < n; i++ {
		bs, err := open(sched.MaxStreamWindow)
		if err != nil {
			t.Fatalf("stream %d of window %d: %v", i+1, sched.MaxStreamWindow, err)
		}
		defer func() { _ = bs.CloseRequest(); _ = bs.CloseResponse() }()
		if first == nil {
			first = bs
		}
	}
	_, err := open(1)
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "open.window") || !strings.Contains(err.Error(), "sched.MaxTenantStreamItems") {
		t.Fatalf("a stream past the tenant's items: %v; want ResourceExhausted naming open.window and sched.MaxTenantStreamItems", err)
	}
	_ = first.CloseRequest()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		bs, err := open(sched.MaxStreamWindow)
		if err == nil {
			_ = bs.CloseRequest()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after closing a stream, one of its window is still refused: %v", err)
		}
	}
}

// TestStreamTenantMaxQueued: a durable stream's items count against its tenant's
// max_queued as submits do: past it the stream ends with the error naming the limit, and
// the items admitted before stay stored.
func TestStreamTenantMaxQueued(t *testing.T) {
	cfg := tenantConfig()
	cfg.Tenants = tenant.Config{"small": {MaxQueued: 3}}
	ts := startServer(t, cfg)
	small := newToken(t, clientsFor(ts, adminToken), "small")
	c, err := stream.Open(context.Background(), streamClient(ts), small, &paddockv1.StreamOpen{Type: "test.nobody", Window: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 10; i++ {
		if _, err := c.Send(context.Background(), []byte("x")); err != nil {
			break // the server ended the stream
		}
	}
	got := make(chan error, 1)
	go func() { _, err := c.Recv(); got <- err }()
	select {
	case err = <-got:
	case <-time.After(2 * time.Minute):
		t.Fatal("a durable stream past its tenant's max_queued still runs after 2 minutes")
	}
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "tenants.small.max_queued") {
		t.Fatalf("a durable stream past its tenant's max_queued: got %v; want ResourceExhausted naming tenants.small.max_queued", err)
	}
	n, err := ts.srv.Store().CountTenant(context.Background(), "small", store.Queued)
	if err != nil {
		t.Fatal(err)
	}
	if n > 3 {
		t.Fatalf("tenant small has %d tasks queued; its max_queued is 3", n)
	}
}

// TestTransientTimeout: a transient stream's items run under the stream's timeout. A
// real handler that hangs is stopped by its agent at the deadline (the assignment carries
// it); an agent that does not stop its task (an executor ignoring its context) has the
// task ended by the server once the timeout and the grace pass. With max_attempts 1,
// each item ends dead with kind TIMEOUT, and the stream goes on.
func TestTransientTimeout(t *testing.T) {
	open := &paddockv1.StreamOpen{Type: "test.hang", Window: 4, Transient: true, TimeoutMs: 500, MaxAttempts: 1}
	t.Run("agent stops it", func(t *testing.T) {
		ts := startServer(t, fastConfig())
		startRealAgent(t, ts.agentAddr, "hang-1", "")
		checkTimedOut(t, ts, open)
	})
	t.Run("server ends it", func(t *testing.T) {
		ts := startServer(t, fastConfig())
		unblock := make(chan struct{})
		defer close(unblock)
		ex := &fakeExec{types: []session.TaskType{{Name: "test.hang", Concurrency: 2}}, fn: func(context.Context, session.Task) session.Result {
			<-unblock // ignores its context: the agent never reports
			return session.Result{}
		}}
		runAgent(t, session.Config{AgentID: "deaf", Host: "test", Dial: session.TCPDialer(ts.agentAddr), DataDir: t.TempDir(), ReconnectMin: 20 * time.Millisecond}, ex)
		checkTimedOut(t, ts, open)
	})
}

// checkTimedOut sends two items through a stream opened with open and wants both back
// dead with kind TIMEOUT within two minutes.
func checkTimedOut(t *testing.T, ts *testServer, open *paddockv1.StreamOpen) {
	t.Helper()
	c, err := stream.Open(context.Background(), streamClient(ts), "", open)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 2; i++ {
		if _, err := c.Send(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan *paddockv1.StreamResult, 2)
	go func() {
		for i := 0; i < 2; i++ {
			r, err := c.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- r
		}
	}()
	for i := 0; i < 2; i++ {
		select {
		case r, ok := <-got:
			if !ok {
				t.Fatal("the stream ended before both results")
			}
			if r.GetState() != paddockv1.State_STATE_DEAD && r.GetState() != paddockv1.State_STATE_FAILED || r.GetFailureKind() != paddockv1.FailureKind_FAILURE_KIND_TIMEOUT {
				t.Fatalf("item %d: %v kind %v %q; want ended with kind TIMEOUT", r.GetSeq(), r.GetState(), r.GetFailureKind(), r.GetError())
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("an item past its timeout never came back")
		}
	}
}

// TestTransientTenantMaxRunning: a tenant's transient stream items count against its
// max_running like its stored tasks: with max_running 1 the tenant never runs two at
// once, however large the stream's window.
func TestTransientTenantMaxRunning(t *testing.T) {
	cfg := tenantConfig()
	cfg.Tenants = tenant.Config{"one": {MaxRunning: 1}}
	ts := startServer(t, cfg)
	tok := newToken(t, clientsFor(ts, adminToken), "one")
	startTenantAgent(t, ts, "mr-1", 4, 0)
	c, err := stream.Open(context.Background(), streamClient(ts), tok, &paddockv1.StreamOpen{Type: "test.sleep", Window: 8, Transient: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 6
	go func() {
		for i := 0; i < n; i++ {
			if _, err := c.Send(context.Background(), []byte("200ms")); err != nil {
				return
			}
		}
	}()
	stop := make(chan struct{})
	most := make(chan int, 1)
	go func() {
		m := 0
		for {
			select {
			case <-stop:
				most <- m
				return
			case <-time.After(10 * time.Millisecond):
			}
			busy, _ := typeSlots(ts, "test.sleep")
			m = max(m, busy)
		}
	}()
	for i := 0; i < n; i++ {
		r, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("item %d: %v %q", i, r.GetState(), r.GetError())
		}
	}
	close(stop)
	if m := <-most; m > 1 {
		t.Fatalf("tenant one ran %d transient items at once; its max_running is 1", m)
	}
}
