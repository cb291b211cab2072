package sched_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// TestRealFailureKinds: a real agent process runs real handler subprocesses
// (testhandler) that fail in each way the agent tells apart; the agent's report says
// which (failure_kind, recorded by the agent), and the server stores it with the
// attempt and serves it in the API, per attempt and on the task. No error text is
// looked at.
func TestRealFailureKinds(t *testing.T) {
	cfg := fastConfig()
	// Leases and the timeout grace far beyond the test's deadlines: every attempt here
	// must end by the agent's report, not by the server expiring its lease.
	cfg.LeaseTTL, cfg.TimeoutGrace = 30*time.Second, time.Minute
	cfg.Blobs = openFS(t) // DATA_PATH_STREAM: the handler's limit is max_output_bytes
	cfg.MaxOutputBytes = 1000
	ts := startServer(t, cfg)
	record := filepath.Join(t.TempDir(), "reports.jsonl")
	startRealAgent(t, ts.agentAddr, "kinds", record)

	cases := []struct {
		name     string
		spec     *paddockv1.TaskSpec
		cancel   bool // cancel it once it runs
		state    paddockv1.State
		kind     paddockv1.FailureKind
		agent    agentv1.FailureKind
		attempts int
	}{
		{"handler error", &paddockv1.TaskSpec{Type: "test.fail", Payload: []byte("fatal"), MaxAttempts: 3},
			false, paddockv1.State_STATE_FAILED, paddockv1.FailureKind_FAILURE_KIND_HANDLER_ERROR, agentv1.FailureKind_FAILURE_KIND_HANDLER_ERROR, 1},
		// The SDK recovers the panic and reports it as such (fatal: not retried).
		{"panic", &paddockv1.TaskSpec{Type: "test.panic", MaxAttempts: 3},
			false, paddockv1.State_STATE_FAILED, paddockv1.FailureKind_FAILURE_KIND_PANIC, agentv1.FailureKind_FAILURE_KIND_PANIC, 1},
		// os.Exit(3) mid-call: the handler process is gone.
		{"crashed", &paddockv1.TaskSpec{Type: "test.crash", MaxAttempts: 1},
			false, paddockv1.State_STATE_DEAD, paddockv1.FailureKind_FAILURE_KIND_CRASHED, agentv1.FailureKind_FAILURE_KIND_CRASHED, 1},
		{"timeout", &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("10m"), TimeoutMs: 1000, MaxAttempts: 1},
			false, paddockv1.State_STATE_DEAD, paddockv1.FailureKind_FAILURE_KIND_TIMEOUT, agentv1.FailureKind_FAILURE_KIND_TIMEOUT, 1},
		// 2000 bytes of output against max_output_bytes 1000: never retried.
		{"output too large", &paddockv1.TaskSpec{Type: "test.big", Payload: []byte("2000"), MaxAttempts: 3},
			false, paddockv1.State_STATE_FAILED, paddockv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE, agentv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE, 1},
		{"cancelled", &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("10m"), MaxAttempts: 3},
			true, paddockv1.State_STATE_CANCELLED, paddockv1.FailureKind_FAILURE_KIND_CANCELLED, agentv1.FailureKind_FAILURE_KIND_CANCELLED, 1},
	}
	// One at a time: test.crash takes down the handler process, and with it any other
	// call running in it.
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := submit(t, ts, tc.spec).GetId()
			if tc.cancel {
				waitFor(t, "the task running", time.Minute, func() bool {
					tk, err := ts.srv.Store().Get(context.Background(), id)
					return err == nil && tk.State == store.Running
				})
				if _, err := ts.tasks.Cancel(context.Background(), connect.NewRequest(&paddockv1.CancelRequest{Id: id})); err != nil {
					t.Fatalf("cancel: %v", err)
				}
			}
			got := wait(t, ts, id, 2*time.Minute)
			att := got.GetAttempts()
			if got.GetState() != tc.state || len(att) != tc.attempts {
				t.Fatalf("task %s: state %v after %d attempts; want %v after %d (%v)", id, got.GetState(), len(att), tc.state, tc.attempts, got)
			}
			if k := att[len(att)-1].GetFailureKind(); k != tc.kind {
				t.Fatalf("last attempt's failure kind %v, want %v (error %q)", k, tc.kind, att[len(att)-1].GetError())
			}
			if got.GetFailureKind() != tc.kind {
				t.Fatalf("task's failure kind %v, want %v", got.GetFailureKind(), tc.kind)
			}
			stored, err := ts.srv.Store().Attempts(context.Background(), id)
			if err != nil || len(stored) != tc.attempts || stored[0].FailureKind == store.NoFailure {
				t.Fatalf("stored attempts %+v, %v", stored, err)
			}
			// The agent's own report of the attempt carried the kind.
			var rep *agentv1.Report
			waitFor(t, "the agent's record of the report", 30*time.Second, func() bool {
				for _, r := range readRecords(t, record) {
					if r.rep.GetTaskId() == id {
						rep = r.rep
						return true
					}
				}
				return false
			})
			if rep.GetFailureKind() != tc.agent {
				t.Fatalf("the agent reported failure kind %v, want %v (report %v)", rep.GetFailureKind(), tc.agent, rep)
			}
		})
	}
	// A success after all that has no failure kind.
	ok := wait(t, ts, submit(t, ts, &paddockv1.TaskSpec{Type: "test.echo", Payload: []byte("hi")}).GetId(), 2*time.Minute)
	if ok.GetState() != paddockv1.State_STATE_SUCCEEDED || ok.GetFailureKind() != paddockv1.FailureKind_FAILURE_KIND_UNSPECIFIED ||
		ok.GetAttempts()[0].GetFailureKind() != paddockv1.FailureKind_FAILURE_KIND_UNSPECIFIED {
		t.Fatalf("successful task: %v; want no failure kind", ok)
	}
}

// TestServerFailureKinds: the kinds the server sets itself (a refusal, a checksum
// mismatch, an output over the inline limit), and its retry policy: an output too
// large is not retried even when the agent calls it retryable, since the same task
// would produce it again. A hand-driven agent reports.
func TestServerFailureKinds(t *testing.T) {
	cfg := rawAgentConfig()
	cfg.HeartbeatInterval = 5 * time.Second // the raw agent does not heartbeat
	cfg.MaxInlineBytes = 100
	ts := startServer(t, cfg)
	raw := dialRawAgent(t, ts, "raw", "kinds.t")

	big := make([]byte, 200)
	bigSum := sha256.Sum256(big)
	cases := []struct {
		name     string
		refuse   bool
		report   func(as *agentv1.Assign) *agentv1.Report
		state    store.State
		kind     store.FailureKind
		attempts int
	}{
		{name: "refused", refuse: true, state: store.Dead, kind: store.Refused, attempts: 1},
		{name: "checksum mismatch", report: func(as *agentv1.Assign) *agentv1.Report {
			r := success(as, nil)
			r.Output = []byte("not the empty output")
			return r
		}, state: store.Dead, kind: store.BadOutput, attempts: 1},
		{name: "over the inline limit", report: func(as *agentv1.Assign) *agentv1.Report {
			r := success(as, nil)
			r.Output, r.Sha256 = big, hex.EncodeToString(bigSum[:])
			return r
		}, state: store.Failed, kind: store.OutputTooLarge, attempts: 1},
		{name: "output too large, called retryable", report: func(as *agentv1.Assign) *agentv1.Report {
			return &agentv1.Report{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: as.GetLeaseSecret(), Status: agentv1.Status_STATUS_FAILED,
				Error: "too much", Retryable: true, FailureKind: agentv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE}
		}, state: store.Failed, kind: store.OutputTooLarge, attempts: 1},
		{name: "crashed stays retryable", report: func(as *agentv1.Assign) *agentv1.Report {
			return &agentv1.Report{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(), LeaseSecret: as.GetLeaseSecret(), Status: agentv1.Status_STATUS_FAILED,
				Error: "gone", Retryable: true, FailureKind: agentv1.FailureKind_FAILURE_KIND_CRASHED}
		}, state: store.Dead, kind: store.Crashed, attempts: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			maxAttempts := int32(1)
			if tc.kind == store.OutputTooLarge {
				maxAttempts = 3 // room for a retry that must not happen
			}
			id := submit(t, ts, &paddockv1.TaskSpec{Type: "kinds.t", MaxAttempts: maxAttempts}).GetId()
			if tc.refuse {
				raw.refuse(t)
			} else {
				as := raw.assign(t)
				if ack := raw.report(t, tc.report(as)); ack.GetOutcome() != agentv1.ReportOutcome_REPORT_OUTCOME_ACCEPTED {
					t.Fatalf("report: %v %s", ack.GetOutcome(), ack.GetError())
				}
			}
			wait(t, ts, id, time.Minute)
			tk, _ := ts.srv.Store().Get(context.Background(), id)
			att, err := ts.srv.Store().Attempts(context.Background(), id)
			if err != nil || tk.State != tc.state || len(att) != tc.attempts || att[0].FailureKind != tc.kind {
				t.Fatalf("task %s %s, attempts %+v (%v); want %s after %d attempts, the first of kind %q", id, tk.State, att, err, tc.state, tc.attempts, tc.kind)
			}
		})
	}
}

// refuse waits for an assignment and refuses it.
func (a *rawAgent) refuse(t *testing.T) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-a.msgs:
			if !ok {
				t.Fatal("session ended while waiting for an assignment")
			}
			if as := m.GetAssign(); as != nil {
				if err := a.stream.Send(&agentv1.AgentMessage{Msg: &agentv1.AgentMessage_Ack{Ack: &agentv1.Ack{TaskId: as.GetTaskId(), LeaseId: as.GetLeaseId(),
					LeaseSecret: as.GetLeaseSecret(), Accepted: false, Error: "no slot, as the test asked"}}}); err != nil {
					t.Fatal(err)
				}
				return
			}
		case <-timeout:
			t.Fatal("no assignment within 10s")
		}
	}
}
