package session

import (
	"sync"
	"time"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
)

// Live logs: the lines a running task's handler logs go to the server in LogChunk
// messages while it runs, batched. A chunk leaves every LogChunkInterval, or as soon
// as LogChunkBytes of lines wait; the Report then carries only the lines no chunk
// carried, so the server's log of the attempt has every line once.
const (
	LogChunkInterval = 250 * time.Millisecond
	LogChunkBytes    = 32 << 10
	// maxPendingLog bounds the lines a task keeps while they cannot be sent (no
	// connection, a server without the capability, a full send queue): beyond it the
	// oldest are dropped and counted, as the server does with its stored log.
	maxPendingLog = 1 << 20
)

// liveLog batches one run's log lines into LogChunks.
type liveLog struct {
	s       *Session
	taskID  string
	leaseID uint64
	secret  string

	// mu guards the fields below.
	mu sync.Mutex
	// The batching goroutine starts with the first line (most tasks log nothing, and
	// cost no goroutine, ticker or channel): stop, done and full (a flush is due:
	// LogChunkBytes wait) are set then; ended once finish ran.
	stop, done   chan struct{}
	full         chan struct{}
	ended        bool
	lines        []*agentv1.LogLine
	bytes        int
	droppedLines uint64
	droppedBytes uint64
}

func lineCost(l *agentv1.LogLine) int { return len(l.GetText()) + 32 }

// startLiveLog starts batching the log of task t; finish ends it.
func (s *Session) startLiveLog(t Task) *liveLog {
	return &liveLog{s: s, taskID: t.ID, leaseID: t.LeaseID, secret: t.LeaseSecret}
}

// add takes one line (Task.OnLog). It never blocks.
func (l *liveLog) add(ln *agentv1.LogLine) {
	l.mu.Lock()
	if l.stop == nil && !l.ended {
		l.stop, l.done, l.full = make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
		go l.loop(l.stop, l.done, l.full)
	}
	full := l.full
	l.lines = append(l.lines, ln)
	l.bytes += lineCost(ln)
	for l.bytes > maxPendingLog && len(l.lines) > 1 {
		l.bytes -= lineCost(l.lines[0])
		l.droppedLines++
		l.droppedBytes += uint64(len(l.lines[0].GetText()))
		l.lines[0] = nil
		l.lines = l.lines[1:]
	}
	due := l.bytes >= LogChunkBytes && full != nil
	l.mu.Unlock()
	if due {
		select {
		case full <- struct{}{}:
		default:
		}
	}
}

func (l *liveLog) loop(stop <-chan struct{}, done chan<- struct{}, full <-chan struct{}) {
	defer close(done)
	t := time.NewTicker(LogChunkInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-full:
		}
		l.flush()
	}
}

// flush sends the waiting lines as one chunk when the connection can take it; else
// they keep waiting (bounded by maxPendingLog).
func (l *liveLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 && l.droppedLines == 0 {
		return
	}
	m := &agentv1.AgentMessage{Msg: &agentv1.AgentMessage_LogChunk{LogChunk: &agentv1.LogChunk{TaskId: l.taskID, LeaseId: l.leaseID, LeaseSecret: l.secret,
		Log: &agentv1.TaskLog{Lines: l.lines, DroppedLines: l.droppedLines, DroppedBytes: l.droppedBytes}}}}
	if !l.s.trySend(m) {
		return
	}
	l.lines, l.bytes, l.droppedLines, l.droppedBytes = nil, 0, 0, 0
}

// finish stops the batching and returns what no chunk carried, with the executor's
// own log (an executor that does not use Task.OnLog) after it: the report's log.
func (l *liveLog) finish(own *agentv1.TaskLog) *agentv1.TaskLog {
	l.mu.Lock()
	stop, done := l.stop, l.done
	l.ended = true
	l.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 && l.droppedLines == 0 {
		return own
	}
	out := &agentv1.TaskLog{Lines: l.lines, DroppedLines: l.droppedLines, DroppedBytes: l.droppedBytes}
	if own != nil {
		out.Lines = append(out.Lines, own.GetLines()...)
		out.DroppedLines += own.GetDroppedLines()
		out.DroppedBytes += own.GetDroppedBytes()
	}
	l.lines = nil
	return out
}

// trySend queues a log chunk on the current connection when the server takes chunks
// and the send queue is less than half full; it never ends the connection (unlike
// sendLocked): a chunk can wait, a report or an ack should not wait behind chunks.
func (s *Session) trySend(m *agentv1.AgentMessage) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil || !s.logChunks || len(s.out) >= cap(s.out)/2 {
		return false
	}
	select {
	case s.out <- m:
		return true
	default:
		return false
	}
}
