package sched

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"connectrpc.com/connect"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// MaxReportLogBytes is the room an agent message has for a report's log beyond its
// outputs: the agent's runner keeps at most 1 MiB of text per attempt
// (runner.Config.MaxTaskLogBytes), plus per-line framing.
const MaxReportLogBytes = 2 << 20

// MaxChunkLines bounds the lines of one LogChunk; a session that sends more is ended.
const MaxChunkLines = 1 << 16

// storeLog appends the log an accepted report carried (the lines no LogChunk carried)
// to the attempt it ended. A failure to store it is logged, not fatal: the result
// matters more than its log.
func (s *Server) storeLog(ctx context.Context, t store.Task, l *agentv1.TaskLog) {
	if l == nil || t.Attempt < 1 {
		return
	}
	if err := s.st.AppendLog(ctx, t.ID, attemptLog(t.Attempt, l)); err != nil {
		s.log.Warn("storing a task's log", "task", t.ID, "attempt", t.Attempt, "err", err)
		return
	}
	s.feed.publishEvent("log", t.Tenant, logEvent(t))
}

// logChunk appends the lines of a running task's LogChunk to its attempt's log, when
// agent a holds the chunk's lease (id and secret, as for a Report) and the task still
// runs under it; otherwise the chunk is dropped (and counted): the agent learns of a
// lost lease from the Cancel or the refused Report.
func (s *Server) logChunk(ctx context.Context, a *agent, c *agentv1.LogChunk) {
	t, err := s.st.Get(ctx, c.GetTaskId())
	if err != nil {
		s.log.Debug("log chunk for a task that cannot be read; dropped", "task", c.GetTaskId(), "err", err)
		return
	}
	if v := classify(t, a.id, c.GetLeaseId(), c.GetLeaseSecret()); v != nil {
		s.metrics.logChunks.WithLabelValues("refused").Inc()
		s.log.Warn("log chunk refused", "agent", a.id, "task", t.ID, "lease", c.GetLeaseId(), "why", v.why)
		return
	}
	if t.Attempt < 1 || len(c.GetLog().GetLines()) == 0 && c.GetLog().GetDroppedLines() == 0 {
		return
	}
	if err := s.st.AppendLog(ctx, t.ID, attemptLog(t.Attempt, c.GetLog())); err != nil {
		s.log.Warn("storing a log chunk", "task", t.ID, "attempt", t.Attempt, "err", err)
		return
	}
	s.metrics.logChunks.WithLabelValues("stored").Inc()
	s.feed.publishEvent("log", t.Tenant, logEvent(t))
}

// attemptLog is the store's form of attempt n's log l.
func attemptLog(n int, l *agentv1.TaskLog) store.AttemptLog {
	al := store.AttemptLog{Attempt: n, DroppedLines: int64(l.GetDroppedLines()), DroppedBytes: int64(l.GetDroppedBytes()),
		Lines: make([]store.LogLine, len(l.GetLines()))}
	for i, ln := range l.GetLines() {
		al.Lines[i] = store.LogLine{Time: time.Unix(0, ln.GetUnixNanos()), Level: ln.GetLevel(), Text: ln.GetText()}
	}
	return al
}

// logEvent is the data of the feed's "log" event: which task's attempt has new lines
// (the page reads them with TaskService.Logs; the lines never travel on the feed).
func logEvent(t store.Task) func() ([]byte, error) {
	return func() ([]byte, error) {
		return json.Marshal(struct {
			ID      string `json:"id"`
			Attempt int    `json:"attempt"`
		}{t.ID, t.Attempt})
	}
}

// Logs implements paddockv1connect.TaskServiceHandler.
func (api *clientAPI) Logs(ctx context.Context, req *connect.Request[paddockv1.LogsRequest]) (*connect.Response[paddockv1.LogsResponse], error) {
	id, n := req.Msg.GetId(), req.Msg.GetAttempt()
	if id == "" {
		return nil, invalid("id: missing: give the task id")
	}
	if n < 0 {
		return nil, invalid("attempt: %d is negative: give the attempt's number (1 for the first run), or 0 for every attempt", n)
	}
	t, err := api.s.visible(ctx, id)
	if err != nil {
		return nil, err
	}
	if int(n) > t.Attempt {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("attempt: task %s has had %d attempts, not %d", id, t.Attempt, n))
	}
	logs, err := api.s.st.Logs(ctx, id, int(n))
	if err != nil {
		return nil, storeErr(err)
	}
	resp := &paddockv1.LogsResponse{State: stateProto(t.State)}
	for _, l := range logs {
		al := &paddockv1.AttemptLog{Attempt: int32(l.Attempt), DroppedLines: uint64(l.DroppedLines), DroppedBytes: uint64(l.DroppedBytes),
			Lines: make([]*paddockv1.LogLine, len(l.Lines))}
		for i, ln := range l.Lines {
			al.Lines[i] = &paddockv1.LogLine{UnixNanos: ln.Time.UnixNano(), Level: ln.Level, Text: ln.Text}
		}
		resp.Attempts = append(resp.Attempts, al)
	}
	return connect.NewResponse(resp), nil
}

// unservedWarning is the warning of Submit and Get (their warning field) for a queued
// task of a type nothing this server knows can run: Explain's NO_SERVER reason (see
// unserved). "" when something serves the type, or when the task is not queued, or
// over a shared store: other replicas' agents and hosts are not known here, and a
// warning could be false.
func (s *Server) unservedWarning(t store.Task) string {
	if t.State != store.Queued || s.shared {
		return ""
	}
	if r := s.unserved(t.Type); r != nil {
		return r.GetMessage()
	}
	return ""
}

// unserved returns Explain's NO_SERVER reason for type typ when no connected agent
// serves it and no host's pool lists it, else nil.
func (s *Server) unserved(typ string) *paddockv1.Reason {
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	for _, a := range s.agents.byID {
		if a.state == agentConnected && !a.gone && a.types[typ] != nil {
			return nil
		}
	}
	if r := s.noAgent(typ); r.GetKind() == paddockv1.Reason_KIND_NO_SERVER {
		return r
	}
	return nil
}
