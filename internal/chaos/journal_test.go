package chaos

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// journalPath is the file the journal handler (./journalhandler) of every TCP agent
// appends to.
func (r *run) journalPath() string { return filepath.Join(r.dir, "journal") }

// execution is one call of chaos.run as the journal shows it.
type execution struct {
	attempt, pid int
	start, done  int64 // unix ns; done 0: never finished (killed, or cancelled)
}

// journalStats are the journal's figures.
type journalStats struct {
	started, completed int
	rerun              int // tasks with more than one completed execution
	concurrent         int // tasks with two completed executions overlapping in time
}

// checkJournal reads the journal and checks, for the chaos.run tasks: the output the
// server accepted came from an execution that completed (same task, attempt and pid),
// and no two completed executions of a task overlapped in time (two live leases at
// once). outputs maps a succeeded chaos.run task's id to its output.
func (r *run) checkJournal(outputs map[string]string) journalStats {
	t := r.t
	var st journalStats
	f, err := os.Open(r.journalPath())
	if err != nil {
		if len(outputs) > 0 {
			t.Errorf("the journal: %v", err)
		}
		return st
	}
	defer f.Close()
	type key struct {
		task         string
		attempt, pid int
	}
	ex := map[key]*execution{}
	byTask := map[string][]*execution{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 {
			t.Errorf("journal line %q: want 5 fields", sc.Text())
			continue
		}
		attempt, _ := strconv.Atoi(fs[2])
		pid, _ := strconv.Atoi(fs[3])
		at, _ := strconv.ParseInt(fs[4], 10, 64)
		k := key{fs[1], attempt, pid}
		e := ex[k]
		switch fs[0] {
		case "start":
			st.started++
			if e != nil {
				t.Errorf("journal: task %s attempt %d started twice in pid %d", k.task, attempt, pid)
				continue
			}
			e = &execution{attempt: attempt, pid: pid, start: at}
			ex[k] = e
			byTask[k.task] = append(byTask[k.task], e)
		case "done":
			st.completed++
			if e == nil || e.done != 0 {
				t.Errorf("journal: task %s attempt %d pid %d done without a start, or twice", k.task, attempt, pid)
				continue
			}
			e.done = at
		}
	}
	if err := sc.Err(); err != nil {
		t.Errorf("reading the journal: %v", err)
	}
	for id, es := range byTask {
		var done []*execution
		for _, e := range es {
			if e.done != 0 {
				done = append(done, e)
			}
		}
		if len(done) > 1 {
			st.rerun++
		}
		sort.Slice(done, func(i, j int) bool { return done[i].start < done[j].start })
		for i := 1; i < len(done); i++ {
			if done[i].start < done[i-1].done {
				st.concurrent++
				t.Errorf("task %s ran twice at once: attempt %d in pid %d and attempt %d in pid %d overlap by %.1f ms",
					id, done[i-1].attempt, done[i-1].pid, done[i].attempt, done[i].pid, float64(done[i-1].done-done[i].start)/1e6)
				break
			}
		}
	}
	for id, out := range outputs {
		var attempt, pid int
		var tid string
		if _, err := fmt.Sscanf(out, "%s attempt %d pid %d", &tid, &attempt, &pid); err != nil || tid != id {
			t.Errorf("task %s: output %q is not chaos.run's", id, out)
			continue
		}
		if e := ex[key{id, attempt, pid}]; e == nil || e.done == 0 {
			t.Errorf("task %s: the accepted output %q is from an execution the journal never saw complete", id, out)
		}
	}
	return st
}
