package session

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// lockedBuffer is a bytes.Buffer safe for a logger and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loggedSession is a session that is not connected: what it would send is in s.out,
// what it logs in logs.
func loggedSession(t *testing.T) (*Session, *lockedBuffer, context.Context) {
	logs := &lockedBuffer{}
	s, err := New(Config{AgentID: "a", Dial: TCPDialer("127.0.0.1:1"), DataDir: t.TempDir(), TotalSlots: 4,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}, &batchExec{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	s.out, s.outCancel = make(chan *agentv1.AgentMessage, 16), cancel
	return s, logs, ctx
}

// TestFailedTaskIsNotStopped: a task whose handler fails is reported as failed, and
// not logged as stopped (the run's own end used to read as its stop).
func TestFailedTaskIsNotStopped(t *testing.T) {
	s, logs, ctx := loggedSession(t)
	s.assign(ctx, &agentv1.Assign{TaskId: "f1", LeaseId: 1, LeaseSecret: "s", Type: "echo", Payload: []byte("fail")})
	deadline := time.After(time.Minute)
	for {
		select {
		case m := <-s.out:
			rep := m.GetReport()
			if rep == nil {
				continue
			}
			if rep.GetStatus() != agentv1.Status_STATUS_FAILED {
				t.Fatalf("report %v, want failed", rep)
			}
			if strings.Contains(logs.String(), "task stopped") {
				t.Fatalf("a failed task was logged as stopped:\n%s", logs.String())
			}
			return
		case <-deadline:
			t.Fatal("no report within a minute")
		}
	}
}

// TestSupersededRunIsNotReported: when a task is assigned again under a newer lease
// while its older run still goes on, the older run is stopped and its end is not
// reported (the server would refuse it as superseded); the newer run's is.
func TestSupersededRunIsNotReported(t *testing.T) {
	s, logs, ctx := loggedSession(t)
	s.assign(ctx, &agentv1.Assign{TaskId: "w1", LeaseId: 1, LeaseSecret: "s", Type: "echo", Payload: []byte("wait")})
	s.assign(ctx, &agentv1.Assign{TaskId: "w1", LeaseId: 2, LeaseSecret: "s", Type: "echo", Payload: []byte("ok")})
	var reports []*agentv1.Report
	deadline := time.After(time.Minute)
	for len(reports) == 0 || !strings.Contains(logs.String(), "lease=1") {
		select {
		case m := <-s.out:
			if rep := m.GetReport(); rep != nil {
				reports = append(reports, rep)
			}
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("after a minute: reports %v, log:\n%s", reports, logs.String())
		}
	}
	s.mu.Lock() // the stopped run logs and would report under s.mu
	s.mu.Unlock()
	for len(s.out) > 0 {
		if rep := (<-s.out).GetReport(); rep != nil {
			reports = append(reports, rep)
		}
	}
	if len(reports) != 1 || reports[0].GetLeaseId() != 2 || reports[0].GetStatus() != agentv1.Status_STATUS_SUCCEEDED {
		t.Fatalf("reports %v, want only lease 2's success", reports)
	}
}
