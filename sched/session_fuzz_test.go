package sched_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/paddockvm/paddock/agent/session"
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched"
)

// The fuzzed session's placeholders: a task id "@" in an Ack, Report or RunningTask is
// the last task assigned to the session, with lease id 0 its lease and lease secret "@"
// its secret; a Report's sha256 "@" is its output's. They let the fuzzer reach the
// paths of real leases, which it could not guess.
const (
	fuzzType   = "fuzz.work"
	canaryType = "fuzz.canary"
	hole       = "@"
)

// encodeSession is the fuzz input for a session of msgs: each message's length as a
// uvarint, then the message.
func encodeSession(msgs ...*agentv1.AgentMessage) []byte {
	var out []byte
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return out
}

// decodeSession splits fuzz input into the messages that decode (at most 64).
func decodeSession(data []byte) []*agentv1.AgentMessage {
	var out []*agentv1.AgentMessage
	for len(data) > 0 && len(out) < 64 {
		n, k := binary.Uvarint(data)
		if k <= 0 {
			return out
		}
		data = data[k:]
		if n > uint64(len(data)) {
			n = uint64(len(data))
		}
		m := &agentv1.AgentMessage{}
		if proto.Unmarshal(data[:n], m) == nil && m.GetMsg() != nil {
			out = append(out, m)
		}
		data = data[n:]
	}
	return out
}

func validRegister(r *agentv1.Register) bool {
	if r == nil || r.GetAgentId() == "" || r.GetProtocolVersion() != sched.ProtocolVersion || len(r.GetTypes()) == 0 {
		return false
	}
	for _, t := range r.GetTypes() {
		if t.GetName() == "" {
			return false
		}
	}
	return true
}

func regMsg(id string, types ...*agentv1.TaskType) *agentv1.AgentMessage {
	return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Register{Register: &agentv1.Register{
		AgentId: id, Host: "fuzz", ProtocolVersion: sched.ProtocolVersion, Types: types, TotalSlots: 4}}}
}

// FuzzAgentSession plays fuzzed sequences of AgentMessage, as an agent on the agent
// port, against a real in-process server (SQLite store, real TCP, agent/transport)
// that a well-behaved agent also uses. Each sequence must leave the server serving.
//
//   - The session ends within 10s once the fuzzed agent closes its side (no hang).
//
//   - Only a valid Register (agent id, protocol version, named types) is answered
//     with Registered, and nothing reaches an agent before it.
//
//   - Every Assign is for a type the session declared, with a task id and a lease.
//
//   - A Report is accepted only for a lease assigned to this session and with the
//     Assign's lease secret (the agent protocol's rule); every ReportAck answers a
//     Report that was sent.
//
//   - Afterwards the well-behaved agent still runs a task to success.
//
//     go test -run '^$' -fuzz '^FuzzAgentSession$' -fuzztime 10m -parallel 1 ./sched
func FuzzAgentSession(f *testing.F) {
	work := &agentv1.TaskType{Name: fuzzType, Version: "1", Slots: 2}
	ack := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: &agentv1.Ack{TaskId: hole, Accepted: true, LeaseSecret: hole}}}
	report := func(status agentv1.Status, secret, sum string) *agentv1.AgentMessage {
		return &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: &agentv1.Report{TaskId: hole, Status: status,
			Output: []byte("out"), Sha256: sum, LeaseSecret: secret, Usage: &agentv1.Usage{WallMs: 1}}}}
	}
	hb := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Heartbeat{Heartbeat: &agentv1.Heartbeat{
		Running: []*agentv1.RunningTask{{TaskId: hole, LeaseSecret: hole}}, Types: []*agentv1.TaskType{work}}}}
	f.Add(encodeSession(regMsg("fz1", work), ack, hb, report(agentv1.Status_STATUS_SUCCEEDED, hole, hole)))
	f.Add(encodeSession(regMsg("fz1", work), ack, report(agentv1.Status_STATUS_SUCCEEDED, "", hole), report(agentv1.Status_STATUS_SUCCEEDED, "guess", hole)))
	f.Add(encodeSession(regMsg("fz2", work), report(agentv1.Status_STATUS_FAILED, hole, ""), report(agentv1.Status_STATUS_FAILED, hole, "")))
	f.Add(encodeSession(regMsg("fz3", work), &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: &agentv1.Ack{TaskId: hole, LeaseSecret: hole, Error: "no"}}}))
	f.Add(encodeSession(regMsg("fz4", &agentv1.TaskType{Name: fuzzType, Slots: 1 << 30}), regMsg("fz4", work)))
	f.Add(encodeSession(hb, regMsg("fz5", work)))
	f.Add(encodeSession(regMsg("", work)))
	f.Add(encodeSession(regMsg("fz6")))
	f.Add(encodeSession(regMsg("fz7", &agentv1.TaskType{})))
	f.Add(encodeSession(regMsg("fz8", &agentv1.TaskType{Name: canaryType}), report(agentv1.Status(99), hole, hole)))
	f.Add(encodeSession(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Register{Register: &agentv1.Register{AgentId: "fz9", ProtocolVersion: 2, Types: []*agentv1.TaskType{work}}}}))
	f.Add(encodeSession(regMsg("fz10", work), &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Report{Report: &agentv1.Report{TaskId: "no-such-task", LeaseId: 1}}}))
	f.Add([]byte{0xff, 0xff, 0xff})

	ts := startServer(f, fastConfig())
	canary := &fakeExec{types: []session.TaskType{{Name: canaryType, Version: "1"}}, fn: echo}
	startAgent(f, ts, "fuzz-canary", canary)

	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := decodeSession(data)
		if len(msgs) == 0 {
			return
		}
		declared := map[string]bool{}
		for _, m := range msgs {
			for _, ty := range append(m.GetRegister().GetTypes(), m.GetHeartbeat().GetTypes()...) {
				declared[ty.GetName()] = true
			}
		}
		if declared[fuzzType] {
			submit(t, ts, &paddockv1.TaskSpec{Type: fuzzType, Payload: []byte("in"), MaxAttempts: 1, TimeoutMs: 5000})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		fa := dialFuzzAgent(ctx, t, ts)
		defer fa.cc.Close()

		type sent struct {
			taskID  string
			leaseID uint64
			secret  string
		}
		var reports []sent
		waited := false
		for i, m := range msgs {
			m = proto.Clone(m).(*agentv1.AgentMessage)
			if needsAssign(m) && !waited && declared[fuzzType] && validRegister(msgs[0].GetRegister()) {
				fa.waitAssign(500 * time.Millisecond) // once: a session may get none (no slots, say)
				waited = true
			}
			fa.fill(m)
			if r := m.GetReport(); r != nil {
				reports = append(reports, sent{r.GetTaskId(), r.GetLeaseId(), r.GetLeaseSecret()})
			}
			if err := fa.stream.Send(m); err != nil {
				break // the server ended the session (io.EOF); its status comes from Recv
			}
			if i == 0 {
				fa.waitFirst()
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("the server did not take %d messages within 30s: %v", len(msgs), msgs)
		}
		fa.waitReportAcks(len(reports), 2*time.Second) // as an agent does before it leaves
		if err := fa.stream.CloseSend(); err != nil {
			t.Fatalf("CloseSend: %v", err)
		}
		select {
		case <-fa.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the server did not end the session within 10s of the agent closing it (messages %v)", msgs)
		}

		fa.mu.Lock()
		defer fa.mu.Unlock()
		if fa.registered && !validRegister(msgs[0].GetRegister()) {
			t.Fatalf("the server answered Registered to a first message %v", msgs[0])
		}
		for i, m := range fa.got {
			if (i == 0) != (m.GetRegistered() != nil) {
				t.Fatalf("server message %d is %v (a session's first answer, and only it, is Registered)", i, m)
			}
			if as := m.GetAssign(); as != nil && (!declared[as.GetType()] || as.GetTaskId() == "" || as.GetLeaseId() == 0) {
				t.Fatalf("assign %v: not a task of a type the session declared (%v) under a lease", as, declared)
			}
			if ra := m.GetReportAck(); ra != nil {
				if !slices.ContainsFunc(reports, func(s sent) bool { return s.taskID == ra.GetTaskId() && s.leaseID == ra.GetLeaseId() }) {
					t.Fatalf("report ack %v answers no report sent", ra)
				}
				if ra.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
					continue
				}
				ok := false
				for _, as := range fa.assigns {
					if as.GetTaskId() == ra.GetTaskId() && as.GetLeaseId() == ra.GetLeaseId() &&
						slices.Contains(reports, sent{as.GetTaskId(), as.GetLeaseId(), as.GetLeaseSecret()}) {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("report accepted for task %s lease %d: no assignment of this session with that lease and secret (assigns %v)",
						ra.GetTaskId(), ra.GetLeaseId(), fa.assigns)
				}
			}
		}

		outcomes := map[agentv1.ReportOutcome]int{}
		for _, m := range fa.got {
			if ra := m.GetReportAck(); ra != nil {
				outcomes[ra.GetOutcome()]++
			}
		}
		t.Logf("%d messages: %d server messages, %d assigns, report outcomes %v, end %v", len(msgs), len(fa.got), len(fa.assigns), outcomes, fa.err)

		// The server still serves a well-behaved agent.
		tk := submit(t, ts, &paddockv1.TaskSpec{Type: canaryType, Payload: []byte("canary")})
		if got := wait(t, ts, tk.GetId(), 20*time.Second); got.GetState() != paddockv1.State_STATE_SUCCEEDED || string(got.GetOutput()) != "canary" {
			t.Fatalf("after the fuzzed session, the canary task is %v", got)
		}
	})
}

// fuzzAgent is one raw agent session on the agent port.
type fuzzAgent struct {
	cc     *grpc.ClientConn
	stream agentv1.AgentService_SessionClient
	first  chan struct{} // closed at the first server message or the end
	newMsg chan struct{} // a message arrived (capacity 1)
	done   chan struct{} // the server ended the session

	mu         sync.Mutex
	got        []*agentv1.ServerMessage
	assigns    []*agentv1.Assign
	registered bool
	err        error
}

func dialFuzzAgent(ctx context.Context, t *testing.T, ts *testServer) *fuzzAgent {
	t.Helper()
	conn, err := session.TCPDialer(ts.agentAddr)(ctx)
	if err != nil {
		t.Fatalf("dialing the agent port: %v", err)
	}
	var once sync.Once
	cc, err := grpc.NewClient("passthrough:///paddock-server", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			var c net.Conn
			once.Do(func() { c = conn })
			if c == nil {
				return nil, errors.New("the fuzzed agent dials once")
			}
			return c, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	fa := &fuzzAgent{cc: cc, first: make(chan struct{}), newMsg: make(chan struct{}, 1), done: make(chan struct{})}
	if fa.stream, err = agentv1.NewAgentServiceClient(cc).Session(ctx); err != nil {
		t.Fatalf("opening a session: %v", err)
	}
	go func() {
		defer close(fa.done)
		var firstOnce sync.Once
		defer firstOnce.Do(func() { close(fa.first) })
		for {
			m, err := fa.stream.Recv()
			fa.mu.Lock()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					fa.err = err
				}
				fa.mu.Unlock()
				return
			}
			fa.got = append(fa.got, m)
			if m.GetRegistered() != nil {
				fa.registered = true
			}
			if as := m.GetAssign(); as != nil {
				fa.assigns = append(fa.assigns, as)
			}
			fa.mu.Unlock()
			firstOnce.Do(func() { close(fa.first) })
			select {
			case fa.newMsg <- struct{}{}:
			default:
			}
		}
	}()
	return fa
}

// waitFirst waits for the server's answer to the first message (or the session's end).
func (fa *fuzzAgent) waitFirst() {
	select {
	case <-fa.first:
	case <-time.After(5 * time.Second):
	}
}

// waitAssign waits up to d for the session's first assignment.
func (fa *fuzzAgent) waitAssign(d time.Duration) {
	timeout := time.After(d)
	for {
		fa.mu.Lock()
		n := len(fa.assigns)
		fa.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-fa.newMsg:
		case <-fa.done:
			return
		case <-timeout:
			return
		}
	}
}

// waitReportAcks waits up to d for n report acks.
func (fa *fuzzAgent) waitReportAcks(n int, d time.Duration) {
	timeout := time.After(d)
	for {
		fa.mu.Lock()
		acks := 0
		for _, m := range fa.got {
			if m.GetReportAck() != nil {
				acks++
			}
		}
		fa.mu.Unlock()
		if acks >= n {
			return
		}
		select {
		case <-fa.newMsg:
		case <-fa.done:
			return
		case <-timeout:
			return
		}
	}
}

func needsAssign(m *agentv1.AgentMessage) bool {
	if m.GetAck().GetTaskId() == hole || m.GetReport().GetTaskId() == hole {
		return true
	}
	for _, r := range m.GetHeartbeat().GetRunning() {
		if r.GetTaskId() == hole {
			return true
		}
	}
	return false
}

// fill replaces the placeholders in m with the last assignment's task, lease and secret.
func (fa *fuzzAgent) fill(m *agentv1.AgentMessage) {
	fa.mu.Lock()
	var as *agentv1.Assign
	if len(fa.assigns) > 0 {
		as = fa.assigns[len(fa.assigns)-1]
	}
	fa.mu.Unlock()
	if as == nil {
		return
	}
	lease := func(id *string, lease *uint64, secret *string) {
		if *id != hole {
			return
		}
		*id = as.GetTaskId()
		if *lease == 0 {
			*lease = as.GetLeaseId()
		}
		if *secret == hole {
			*secret = as.GetLeaseSecret()
		}
	}
	switch {
	case m.GetAck() != nil:
		a := m.GetAck()
		lease(&a.TaskId, &a.LeaseId, &a.LeaseSecret)
	case m.GetReport() != nil:
		r := m.GetReport()
		lease(&r.TaskId, &r.LeaseId, &r.LeaseSecret)
		if r.GetSha256() == hole {
			sum := sha256.Sum256(r.GetOutput())
			r.Sha256 = hex.EncodeToString(sum[:])
		}
	case m.GetHeartbeat() != nil:
		for _, rt := range m.GetHeartbeat().GetRunning() {
			lease(&rt.TaskId, &rt.LeaseId, &rt.LeaseSecret)
		}
	}
}
