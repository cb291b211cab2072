package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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

// testAppendLog: appends add lines after the stored ones (creating the attempt's log),
// add the drop counts, drop the oldest lines beyond MaxAttemptLogBytes (counting
// them), keep concurrent appends' lines, and refuse a missing task or attempt 0.
func testAppendLog(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, NewTask("ap1", "a"))
	line := func(text string) store.LogLine { return store.LogLine{Time: t0, Level: "info", Text: text} }
	if err := s.AppendLog(ctx, "ap1", store.AttemptLog{Attempt: 1, Lines: []store.LogLine{line("one"), line("two")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendLog(ctx, "ap1", store.AttemptLog{Attempt: 1, Lines: []store.LogLine{line("three")}, DroppedLines: 2, DroppedBytes: 10}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Logs(ctx, "ap1", 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("Logs = %+v, %v; want attempt 1", got, err)
	}
	var texts []string
	for _, l := range got[0].Lines {
		texts = append(texts, l.Text)
	}
	if strings.Join(texts, ",") != "one,two,three" || got[0].DroppedLines != 2 || got[0].DroppedBytes != 10 {
		t.Fatalf("after two appends: lines %v, dropped %d/%d; want one,two,three, dropped 2/10", texts, got[0].DroppedLines, got[0].DroppedBytes)
	}

	// Over the bound: the oldest lines go, counted.
	big := strings.Repeat("x", 100<<10)
	for i := range 12 {
		if err := s.AppendLog(ctx, "ap1", store.AttemptLog{Attempt: 2, Lines: []store.LogLine{line(fmt.Sprintf("%02d%s", i, big))}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err = s.Logs(ctx, "ap1", 2)
	if err != nil || len(got) != 1 {
		t.Fatalf("Logs(2) = %v, %v", len(got), err)
	}
	size := 0
	for _, l := range got[0].Lines {
		size += store.LineCost(l)
	}
	n := len(got[0].Lines)
	if size > store.MaxAttemptLogBytes || got[0].DroppedLines != int64(12-n) || got[0].DroppedBytes != int64(12-n)*int64(len(big)+2) ||
		!strings.HasPrefix(got[0].Lines[n-1].Text, "11") || !strings.HasPrefix(got[0].Lines[0].Text, fmt.Sprintf("%02d", 12-n)) {
		t.Fatalf("over the bound: %d lines (%d bytes), dropped %d/%d, first %.2q last %.2q; want the newest within %d bytes, the rest counted",
			n, size, got[0].DroppedLines, got[0].DroppedBytes, got[0].Lines[0].Text, got[0].Lines[n-1].Text, store.MaxAttemptLogBytes)
	}

	// Concurrent appends lose nothing.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.AppendLog(ctx, "ap1", store.AttemptLog{Attempt: 3, Lines: []store.LogLine{line(fmt.Sprint(i))}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got, err := s.Logs(ctx, "ap1", 3); err != nil || len(got) != 1 || len(got[0].Lines) != 8 {
		t.Fatalf("after 8 concurrent appends: %+v, %v; want 8 lines", got, err)
	}

	if err := s.AppendLog(ctx, "no-such-task", store.AttemptLog{Attempt: 1, Lines: []store.LogLine{line("x")}}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppendLog(missing task) = %v; want ErrNotFound", err)
	}
	if err := s.AppendLog(ctx, "ap1", store.AttemptLog{Attempt: 0}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("AppendLog(attempt 0) = %v; want ErrInvalid", err)
	}
}
