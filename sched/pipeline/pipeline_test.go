package pipeline

import (
	"strings"
	"testing"

	"github.com/paddockvm/paddock/sched/store"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		want    Ref
		wantErr string
	}{
		{"@task:0193-ab", Ref{KindTask, "0193-ab", ""}, ""},
		{"@task:0193-ab/out", Ref{KindTask, "0193-ab", "out"}, ""},
		{"@stage:compress/data.gz", Ref{KindStage, "compress", "data.gz"}, ""},
		{"task:abc", Ref{}, "not a reference"},
		{"@task:", Ref{}, "task name"},
		{"@task:a b", Ref{}, "task name"},
		{"@task:abc/", Ref{}, "output name"},
		{"@task:abc/.hidden", Ref{}, "output name"},
		{"@stage:" + strings.Repeat("x", 65), Ref{}, "stage name"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRef(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseRef(%q) = %v, %v; want an error about %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want || got.String() != tc.in {
				t.Fatalf("ParseRef(%q) = %+v (%s), %v; want %+v", tc.in, got, got, err, tc.want)
			}
		})
	}
}

func TestOrder(t *testing.T) {
	tests := []struct {
		name    string
		stages  []Stage
		want    []string
		wantErr string
	}{
		{"chain given backwards", []Stage{{"c", []string{"b"}}, {"b", []string{"a"}}, {"a", nil}}, []string{"a", "b", "c"}, ""},
		{"diamond", []Stage{{"d", []string{"b", "c"}}, {"a", nil}, {"b", []string{"a"}}, {"c", []string{"a"}}}, []string{"a", "b", "c", "d"}, ""},
		{"cycle", []Stage{{"a", []string{"c"}}, {"b", []string{"a"}}, {"c", []string{"b"}}}, nil, "cycle: a -> c -> b -> a"},
		{"self", []Stage{{"a", []string{"a"}}}, nil, "cycle: a -> a"},
		{"unknown", []Stage{{"a", []string{"zz"}}}, nil, `reads from stage "zz"`},
		{"duplicate", []Stage{{"a", nil}, {"a", nil}}, nil, "same name"},
		{"bad name", []Stage{{"a/b", nil}}, nil, `stages[0].name "a/b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			order, err := Order(tc.stages)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Order = %v, %v; want an error with %q", order, err, tc.wantErr)
				}
				return
			}
			var got []string
			for _, i := range order {
				got = append(got, tc.stages[i].Name)
			}
			if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("Order = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	own := store.BlobRef{Digest: "sha256:01", Size: 1}
	o1 := store.BlobRef{Digest: "sha256:02", Size: 2}
	o2 := store.BlobRef{Digest: "sha256:03", Size: 3}
	down := store.Task{ID: "d", State: store.Waiting, InputBlobs: map[string]store.BlobRef{"own": own},
		Upstreams: map[string]store.Upstream{"x": {TaskID: "u1"}, "y": {TaskID: "u2", Output: "b"}}}
	ok1 := store.Task{ID: "u1", State: store.Succeeded, OutputBlobs: map[string]store.BlobRef{"out": o1}}
	ok2 := store.Task{ID: "u2", State: store.Succeeded, OutputBlobs: map[string]store.BlobRef{"a": o1, "b": o2}}
	tests := []struct {
		name       string
		ups        map[string]store.Task
		want       Action
		wantReason string
	}{
		{"all succeeded", map[string]store.Task{"u1": ok1, "u2": ok2}, Queue, ""},
		{"one running", map[string]store.Task{"u1": ok1, "u2": {ID: "u2", State: store.Running}}, Wait, ""},
		{"one dead", map[string]store.Task{"u1": {ID: "u1", State: store.Dead, Error: "lease expired"}, "u2": {ID: "u2", State: store.Running}}, Fail,
			`input "x": upstream task u1 ended dead: lease expired`},
		{"one cancelled", map[string]store.Task{"u1": ok1, "u2": {ID: "u2", State: store.Cancelled}}, Fail, "u2 ended cancelled"},
		{"gone", map[string]store.Task{"u2": ok2}, Fail, "u1 no longer exists"},
		{"missing output", map[string]store.Task{"u1": ok1, "u2": {ID: "u2", State: store.Succeeded, OutputBlobs: map[string]store.BlobRef{"a": o1}, Outputs: map[string][]byte{"c": nil}}}, Fail,
			`produced no output "b" (its output blobs: a; its inline outputs: c)`},
		{"ambiguous output", map[string]store.Task{"u1": ok2, "u2": ok2}, Fail, "name one as @task:u2/OUTPUT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(down, tc.ups, 0)
			if d.Action != tc.want || !strings.Contains(d.Reason, tc.wantReason) {
				t.Fatalf("Decide = %+v; want action %d with reason %q", d, tc.want, tc.wantReason)
			}
			if d.Action == Queue && (d.Inputs["own"] != own || d.Inputs["x"] != o1 || d.Inputs["y"] != o2 || len(d.Inputs) != 3 || d.Inline != nil) {
				t.Fatalf("Decide inputs = %v, inline %v; want own, x = out of u1, y = b of u2, nothing inline", d.Inputs, d.Inline)
			}
		})
	}
	// Inline outputs: the unnamed output of a task without output blobs is its inline
	// output; a named one may be a named inline output. They join the task's own inline
	// inputs, within the inline limit.
	inl := store.Task{ID: "d", State: store.Waiting, Payload: []byte("p"), Inputs: map[string][]byte{"own": []byte("o")},
		Upstreams: map[string]store.Upstream{"x": {TaskID: "u1"}, "y": {TaskID: "u2", Output: "stats"}}}
	ups := map[string]store.Task{
		"u1": {ID: "u1", State: store.Succeeded, Output: []byte("compressed")},
		"u2": {ID: "u2", State: store.Succeeded, OutputBlobs: map[string]store.BlobRef{"a": o1}, Outputs: map[string][]byte{"stats": []byte("42")}},
	}
	d := Decide(inl, ups, 0)
	if d.Action != Queue || string(d.Inline["x"]) != "compressed" || string(d.Inline["y"]) != "42" || string(d.Inline["own"]) != "o" || len(d.Inline) != 3 {
		t.Fatalf("Decide with inline outputs = %+v; want queued with x = u1's output, y = u2's stats, own kept", d)
	}
	if len(inl.Inputs) != 1 {
		t.Fatalf("Decide changed the task's own inline inputs: %v", inl.Inputs)
	}
	if d := Decide(inl, ups, 10); d.Action != Fail || !strings.Contains(d.Reason, "server.max_inline_bytes") {
		t.Fatalf("Decide past the inline limit = %+v; want a failure naming server.max_inline_bytes", d)
	}
	empty := map[string]store.Task{"u1": {ID: "u1", State: store.Succeeded}, "u2": ups["u2"]}
	if d := Decide(inl, empty, 0); d.Action != Queue || d.Inline["x"] == nil || len(d.Inline["x"]) != 0 {
		t.Fatalf("Decide with an upstream whose output is empty = %+v; want queued with x empty", d)
	}
	if len(down.InputBlobs) != 1 {
		t.Fatalf("Decide changed the task's own input blobs: %v", down.InputBlobs)
	}
}
