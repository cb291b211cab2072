package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// testLogs: an attempt's log is stored and read back whole (lines in order, drop
// counts), a second put for the same attempt replaces it, attempt 0 reads every
// attempt oldest first, and a log for a missing task or attempt 0 is refused.
func testLogs(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("lg1", "a"))
	if got, err := s.Logs(ctx, "lg1", 0); err != nil || len(got) != 0 {
		t.Fatalf("Logs of a task without logs = %v, %v; want none", got, err)
	}
	at := time.Unix(1_800_000_000, 123_456_789)
	second := store.AttemptLog{Attempt: 2, Lines: []store.LogLine{
		{Time: at, Level: "info", Text: "hello k=v"},
		{Time: at.Add(time.Millisecond), Level: "stderr", Text: "raw ünïcode line"},
	}, DroppedLines: 7, DroppedBytes: 700}
	first := store.AttemptLog{Attempt: 1, Lines: []store.LogLine{{Time: at, Level: "error", Text: "first try"}}}
	for _, l := range []store.AttemptLog{second, {Attempt: 1, Lines: []store.LogLine{{Time: at, Level: "info", Text: "replaced"}}}, first} {
		if err := s.PutLog(ctx, "lg1", l); err != nil {
			t.Fatalf("PutLog(attempt %d): %v", l.Attempt, err)
		}
	}
	all, err := s.Logs(ctx, "lg1", 0)
	if err != nil || len(all) != 2 {
		t.Fatalf("Logs(all) = %v, %v; want 2 attempts", all, err)
	}
	for i, want := range []store.AttemptLog{first, second} {
		got := all[i]
		if got.Attempt != want.Attempt || got.DroppedLines != want.DroppedLines || got.DroppedBytes != want.DroppedBytes || len(got.Lines) != len(want.Lines) {
			t.Fatalf("attempt %d: got %+v, want %+v", want.Attempt, got, want)
		}
		for j, ln := range got.Lines {
			w := want.Lines[j]
			if !ln.Time.Equal(w.Time) || ln.Level != w.Level || ln.Text != w.Text {
				t.Errorf("attempt %d line %d: got %+v, want %+v", want.Attempt, j, ln, w)
			}
		}
	}
	one, err := s.Logs(ctx, "lg1", 2)
	if err != nil || len(one) != 1 || one[0].Attempt != 2 {
		t.Fatalf("Logs(attempt 2) = %+v, %v; want attempt 2 only", one, err)
	}
	if none, err := s.Logs(ctx, "lg1", 3); err != nil || len(none) != 0 {
		t.Errorf("Logs(attempt 3) = %+v, %v; want none", none, err)
	}
	if err := s.PutLog(ctx, "no-such-task", first); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PutLog(missing task) = %v; want ErrNotFound", err)
	}
	if err := s.PutLog(ctx, "lg1", store.AttemptLog{Attempt: 0}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("PutLog(attempt 0) = %v; want ErrInvalid", err)
	}
}

// testLogsDeleted: retention (DeleteFinished) deletes a task's logs with the task.
func testLogsDeleted(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("lgold", "echo"))
	mustCreate(t, s, NewTask("lgkeep", "echo"))
	finishAt(t, s, "lgold", store.Succeeded, t0)
	finishAt(t, s, "lgkeep", store.Succeeded, t0.Add(time.Hour))
	for _, id := range []string{"lgold", "lgkeep"} {
		if err := s.PutLog(ctx, id, store.AttemptLog{Attempt: 1, Lines: []store.LogLine{{Time: t0, Level: "info", Text: id}}}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeleteFinished(ctx, store.Succeeded, t0.Add(time.Minute), 10); err != nil || n != 1 {
		t.Fatalf("DeleteFinished = %d, %v; want 1", n, err)
	}
	if got, err := s.Logs(ctx, "lgold", 0); err != nil || len(got) != 0 {
		t.Errorf("logs of a deleted task = %+v, %v; want none", got, err)
	}
	if got, err := s.Logs(ctx, "lgkeep", 0); err != nil || len(got) != 1 {
		t.Errorf("logs of a kept task = %+v, %v; want its one attempt", got, err)
	}
}
