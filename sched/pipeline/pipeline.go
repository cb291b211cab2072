package pipeline

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/paddockvm/paddock/sched/store"
)

// Kind is what a reference points to.
type Kind string

// The kinds of reference.
const (
	KindTask  Kind = "task"  // a stored task, by id
	KindStage Kind = "stage" // a stage of the same pipeline, by name
)

// Ref is a parsed reference to another task's output.
type Ref struct {
	Kind   Kind
	Name   string // the task id or the stage name
	Output string // the output blob's name; "": the task's only output blob
}

// String returns the reference as written ("@task:ID/OUTPUT").
func (r Ref) String() string {
	s := "@" + string(r.Kind) + ":" + r.Name
	if r.Output != "" {
		s += "/" + r.Output
	}
	return s
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	stageRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	outputRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)
)

// IsRef reports whether s is written as a reference (starts with "@task:" or "@stage:").
func IsRef(s string) bool {
	return strings.HasPrefix(s, "@task:") || strings.HasPrefix(s, "@stage:")
}

// ParseRef parses "@task:ID", "@task:ID/OUTPUT", "@stage:NAME" or "@stage:NAME/OUTPUT".
func ParseRef(s string) (Ref, error) {
	var r Ref
	rest, ok := strings.CutPrefix(s, "@task:")
	if ok {
		r.Kind = KindTask
	} else if rest, ok = strings.CutPrefix(s, "@stage:"); ok {
		r.Kind = KindStage
	} else {
		return r, fmt.Errorf("%q is not a reference: write @task:ID or @task:ID/OUTPUT (in a pipeline also @stage:NAME[/OUTPUT])", s)
	}
	r.Name, r.Output, _ = strings.Cut(rest, "/")
	re := nameRE
	if r.Kind == KindStage {
		re = stageRE
	}
	if !re.MatchString(r.Name) {
		return r, fmt.Errorf("%q: the %s name %q must be 1-%d letters, digits, '.', '_', '-'", s, r.Kind, r.Name, map[Kind]int{KindTask: 128, KindStage: 64}[r.Kind])
	}
	if strings.Contains(s, "/") && !outputRE.MatchString(r.Output) {
		return r, fmt.Errorf("%q: the output name %q must be 1-128 letters, digits, '.', '_', '-', not starting with '.'", s, r.Output)
	}
	return r, nil
}

// ValidStageName reports whether name can name a stage.
func ValidStageName(name string) bool { return stageRE.MatchString(name) }

// Stage is one node of a DAG: its name and the stages it reads from.
type Stage struct {
	Name string
	Deps []string
}

// Order checks a DAG of stages and returns their indexes in an order where every stage
// comes after the stages it depends on (stable: the given order where free). It fails
// on a duplicate or invalid name, a dependency on an unknown stage, and a cycle (the
// error names the cycle: "a -> b -> a").
func Order(stages []Stage) ([]int, error) {
	idx := make(map[string]int, len(stages))
	for i, s := range stages {
		if !ValidStageName(s.Name) {
			return nil, fmt.Errorf("stages[%d].name %q: use 1-64 letters, digits, '.', '_', '-'", i, s.Name)
		}
		if j, dup := idx[s.Name]; dup {
			return nil, fmt.Errorf("stages[%d].name %q: stages[%d] has the same name; give every stage its own", i, s.Name, j)
		}
		idx[s.Name] = i
	}
	for i, s := range stages {
		for _, d := range s.Deps {
			if _, ok := idx[d]; !ok {
				return nil, fmt.Errorf("stage %q (stages[%d]) reads from stage %q, which the pipeline does not have", s.Name, i, d)
			}
		}
	}
	const (
		unseen = iota
		onPath
		done
	)
	mark := make([]int, len(stages))
	var order []int
	var path []int
	var visit func(i int) error
	visit = func(i int) error {
		switch mark[i] {
		case done:
			return nil
		case onPath:
			var names []string
			for k := len(path) - 1; k >= 0; k-- {
				names = append([]string{stages[path[k]].Name}, names...)
				if path[k] == i {
					break
				}
			}
			names = append(names, stages[i].Name)
			return fmt.Errorf("the pipeline has a cycle: %s; a stage cannot read, directly or not, from itself", strings.Join(names, " -> "))
		}
		mark[i] = onPath
		path = append(path, i)
		deps := append([]string(nil), stages[i].Deps...)
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(idx[d]); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		mark[i] = done
		order = append(order, i)
		return nil
	}
	for i := range stages {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// Action is what a waiting task does now.
type Action int

// The actions.
const (
	Wait  Action = iota // an upstream is still live
	Queue               // every upstream succeeded: queue with Decision.Inputs
	Fail                // an upstream ended otherwise, is gone, or lacks the output
)

// Decision is Decide's answer.
type Decision struct {
	Action Action
	// Inputs (Queue) is the task's input blobs with the upstreams' output blobs added.
	Inputs map[string]store.BlobRef
	// Inline (Queue) is the task's inline inputs with the upstreams' inline outputs
	// added; nil when no upstream gave an inline output.
	Inline map[string][]byte
	// Reason (Fail) says which upstream and why.
	Reason string
}

// Decide says what the waiting task down does, given its upstreams by task id as they
// are now (a missing id: the upstream is gone, deleted by retention). An upstream's
// output is a blob, or its inline bytes (Output); maxInline (0: no limit) bounds the
// task's inline data (payload, inline inputs and their names) once inline outputs are
// added, as server.max_inline_bytes bounds a submitted task's.
func Decide(down store.Task, ups map[string]store.Task, maxInline int) Decision {
	inputs := make(map[string]store.BlobRef, len(down.InputBlobs)+len(down.Upstreams))
	for k, v := range down.InputBlobs {
		inputs[k] = v
	}
	var inline map[string][]byte
	waiting := false
	for _, name := range sortedNames(down.Upstreams) {
		u := down.Upstreams[name]
		ref := Ref{Kind: KindTask, Name: u.TaskID, Output: u.Output}
		up, ok := ups[u.TaskID]
		if !ok {
			return Decision{Action: Fail, Reason: fmt.Sprintf("input %q: upstream task %s no longer exists", name, u.TaskID)}
		}
		switch up.State {
		case store.Succeeded:
		case store.Failed, store.Dead, store.Cancelled:
			why := ""
			if up.Error != "" {
				why = ": " + up.Error
			}
			return Decision{Action: Fail, Reason: fmt.Sprintf("input %q: upstream task %s ended %s%s", name, u.TaskID, up.State, why)}
		default:
			waiting = true
			continue
		}
		o, err := Output(up, ref)
		if err != nil {
			return Decision{Action: Fail, Reason: fmt.Sprintf("input %q: %v", name, err)}
		}
		if !o.IsInline {
			inputs[name] = o.Blob
			continue
		}
		if inline == nil {
			inline = make(map[string][]byte, len(down.Inputs)+1)
			for k, v := range down.Inputs {
				inline[k] = v
			}
		}
		inline[name] = o.Inline
	}
	if waiting {
		return Decision{Action: Wait}
	}
	if inline != nil && maxInline > 0 {
		size := len(down.Payload)
		for k, v := range inline {
			size += len(k) + len(v)
		}
		if size > maxInline {
			return Decision{Action: Fail, Reason: fmt.Sprintf("the upstreams' inline outputs make the task's inline data %d bytes, over the server's inline limit of %d bytes (server.max_inline_bytes): have the upstream write its result as an output file (a blob), which has no such limit", size, maxInline)}
		}
	}
	return Decision{Action: Queue, Inputs: inputs, Inline: inline}
}

// Resolved is the output of an upstream a reference names: a blob, or inline bytes.
type Resolved struct {
	Blob     store.BlobRef
	Inline   []byte
	IsInline bool
}

// Output returns the output of up that ref names. A named output is the output blob
// of that name, else the inline output of that name (Task.Outputs). Unnamed, it is the
// task's one output blob, or its inline output (Task.Output) when it has no output
// blob; with several output blobs the reference must name one.
func Output(up store.Task, ref Ref) (Resolved, error) {
	if ref.Output != "" {
		if b, ok := up.OutputBlobs[ref.Output]; ok {
			return Resolved{Blob: b}, nil
		}
		if b, ok := up.Outputs[ref.Output]; ok {
			return Resolved{Inline: b, IsInline: true}, nil
		}
		return Resolved{}, fmt.Errorf("upstream task %s produced no output %q (its output blobs: %s; its inline outputs: %s)", up.ID, ref.Output, names(up.OutputBlobs), names(up.Outputs))
	}
	switch len(up.OutputBlobs) {
	case 0:
		out := up.Output
		if out == nil {
			out = []byte{}
		}
		return Resolved{Inline: out, IsInline: true}, nil
	case 1:
		for _, b := range up.OutputBlobs {
			return Resolved{Blob: b}, nil
		}
	}
	return Resolved{}, fmt.Errorf("%s names no output and upstream task %s has %d output blobs (%s): name one as @task:%s/OUTPUT",
		ref, up.ID, len(up.OutputBlobs), names(up.OutputBlobs), up.ID)
}

func names[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	return strings.Join(sortedNames(m), ", ")
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
