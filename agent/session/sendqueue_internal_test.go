package session

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// TestFullSendQueueEndsTheConnection: a message that does not fit the send queue is
// never dropped silently: the connection ends (and the reconnect resyncs).
func TestFullSendQueueEndsTheConnection(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	s := &Session{log: slog.New(slog.NewTextHandler(io.Discard, nil)), out: make(chan *agentv1.AgentMessage, 1), outCancel: cancel}
	m := &agentv1.AgentMessage{}
	s.sendLocked(m) // fits
	if ctx.Err() != nil {
		t.Fatal("the connection ended with room in the queue")
	}
	s.sendLocked(m) // does not fit
	if !errors.Is(context.Cause(ctx), errSendQueueFull) {
		t.Fatalf("after an overflow the connection's cause is %v, want errSendQueueFull", context.Cause(ctx))
	}
	if s.out != nil {
		t.Fatal("the overflowed queue is still the session's")
	}
	s.sendLocked(m) // disconnected: dropped, no panic
}
