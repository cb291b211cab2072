package chaos

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps the errors a check reports instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

// TestJournalCheck: the journal check finds two completed executions of a task that
// overlap, and an accepted output from an execution that never completed; a clean
// journal passes.
func TestJournalCheck(t *testing.T) {
	tests := []struct {
		name    string
		journal string
		outputs map[string]string
		want    []string // substrings of the errors, in order; none: no error
		st      journalStats
	}{
		{name: "clean: a killed execution, then a rerun",
			journal: "start t1 1 10 100\nstart t2 1 10 110\ndone t2 1 10 150\nstart t1 2 20 300\ndone t1 2 20 400\n",
			outputs: map[string]string{"t1": "t1 attempt 2 pid 20", "t2": "t2 attempt 1 pid 10"},
			st:      journalStats{started: 3, completed: 2}},
		{name: "completed twice, one after the other (allowed, counted)",
			journal: "start t1 1 10 100\ndone t1 1 10 200\nstart t1 2 20 300\ndone t1 2 20 400\n",
			outputs: map[string]string{"t1": "t1 attempt 2 pid 20"},
			st:      journalStats{started: 2, completed: 2, rerun: 1}},
		{name: "two at once",
			journal: "start t1 1 10 100\nstart t1 2 20 150\ndone t1 1 10 200\ndone t1 2 20 400\n",
			outputs: map[string]string{"t1": "t1 attempt 2 pid 20"},
			want:    []string{"task t1 ran twice at once: attempt 1 in pid 10 and attempt 2 in pid 20"},
			st:      journalStats{started: 2, completed: 2, rerun: 1, concurrent: 1}},
		{name: "accepted output from an execution that never completed",
			journal: "start t1 1 10 100\nstart t1 2 20 300\ndone t1 2 20 400\n",
			outputs: map[string]string{"t1": "t1 attempt 1 pid 10"},
			want:    []string{"execution the journal never saw complete"},
			st:      journalStats{started: 2, completed: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			r := &run{t: rec, dir: t.TempDir()}
			if err := os.WriteFile(r.journalPath(), []byte(tc.journal), 0o644); err != nil {
				t.Fatal(err)
			}
			st := r.checkJournal(tc.outputs)
			if st != tc.st {
				t.Errorf("stats %+v, want %+v", st, tc.st)
			}
			if len(rec.errs) != len(tc.want) {
				t.Fatalf("errors %q, want %d matching %q", rec.errs, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(rec.errs[i], w) {
					t.Errorf("error %q lacks %q", rec.errs[i], w)
				}
			}
		})
	}
}
