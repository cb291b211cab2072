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

// TestFailedTaskIsNotStopped: a task whose handler fails is reported as failed, and
// not logged as stopped (the run's own end used to read as its stop).
func TestFailedTaskIsNotStopped(t *testing.T) {
	var logs lockedBuffer
	s, err := New(Config{AgentID: "stop", Dial: TCPDialer("127.0.0.1:1"), DataDir: t.TempDir(), TotalSlots: 4,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, &batchExec{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	s.out, s.outCancel = make(chan *agentv1.AgentMessage, 16), cancel
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
