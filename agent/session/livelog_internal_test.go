package session

import (
	"fmt"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

func logLine(i int, size int) *agentv1.LogLine {
	return &agentv1.LogLine{UnixNanos: int64(i), Level: "info", Text: fmt.Sprintf("%06d %s", i, strings.Repeat("x", size))}
}

// TestLiveLogEveryLineOnce: lines sent in chunks and the tail finish returns cover
// every line once, in order; a chunk carries the lease, and none exceeds what waited.
func TestLiveLogEveryLineOnce(t *testing.T) {
	s := &Session{out: make(chan *agentv1.AgentMessage, 64), logChunks: true}
	l := s.startLiveLog(Task{ID: "t1", LeaseID: 7, LeaseSecret: "sec"})
	for i := range 100 {
		l.add(logLine(i, 1000)) // 100 KB: at least two chunks of 32 KiB
	}
	deadline := time.Now().Add(time.Minute)
	for len(s.out) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for i := 100; i < 110; i++ {
		l.add(logLine(i, 10))
	}
	tail := l.finish(nil)
	var got []string
	for len(s.out) > 0 {
		c := (<-s.out).GetLogChunk()
		if c.GetTaskId() != "t1" || c.GetLeaseId() != 7 || c.GetLeaseSecret() != "sec" {
			t.Fatalf("chunk for %s lease %d secret %q; want t1, 7, sec", c.GetTaskId(), c.GetLeaseId(), c.GetLeaseSecret())
		}
		for _, ln := range c.GetLog().GetLines() {
			got = append(got, ln.GetText()[:6])
		}
	}
	if len(got) == 0 {
		t.Fatal("no chunk was sent for 100 KB of lines")
	}
	for _, ln := range tail.GetLines() {
		got = append(got, ln.GetText()[:6])
	}
	if len(got) != 110 {
		t.Fatalf("chunks and tail hold %d lines, want 110", len(got))
	}
	for i, g := range got {
		if g != fmt.Sprintf("%06d", i) {
			t.Fatalf("line %d is %s: lines lost, repeated or out of order", i, g)
		}
	}
}

// TestLiveLogBoundedWhileDisconnected: with no connection nothing is sent, the newest
// lines within 1 MiB are kept for the report, and the dropped ones are counted.
func TestLiveLogBoundedWhileDisconnected(t *testing.T) {
	s := &Session{}
	l := s.startLiveLog(Task{ID: "t2", LeaseID: 1})
	for i := range 3000 {
		l.add(logLine(i, 1000))
	}
	tail := l.finish(&agentv1.TaskLog{Lines: []*agentv1.LogLine{logLine(9999, 1)}, DroppedLines: 1, DroppedBytes: 5})
	size := 0
	for _, ln := range tail.GetLines() {
		size += lineCost(ln)
	}
	n := len(tail.GetLines())
	if size > maxPendingLog+lineCost(logLine(9999, 1)) || tail.GetDroppedLines() != uint64(3000-(n-1))+1 {
		t.Fatalf("kept %d lines (%d bytes), dropped %d; want the newest within %d bytes, the rest counted", n, size, tail.GetDroppedLines(), maxPendingLog)
	}
	if !strings.HasPrefix(tail.GetLines()[n-2].GetText(), "002999") || !strings.HasPrefix(tail.GetLines()[n-1].GetText(), "009999") {
		t.Errorf("tail ends %q, %q; want the newest live line, then the executor's own", tail.GetLines()[n-2].GetText()[:6], tail.GetLines()[n-1].GetText()[:6])
	}
}
