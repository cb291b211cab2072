package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// FuzzScore scores fuzzed truth and prediction CSVs. Whatever Score accepts must add up:
// rows equal to the truth's data rows (as encoding/csv reads them), confusion counts
// and per-class supports summing to rows, accuracy the diagonal's share, every
// precision, recall and F1 in [0, 1], and the output (what the handler returns)
// encoding to JSON.
//
//	go test -run '^$' -fuzz '^FuzzScore$' -fuzztime 10m ./plugins/handlers/score
func FuzzScore(f *testing.F) {
	f.Add("id,label\n1,a\n2,b\n3,a\n", "id,label\n3,a\n1,b\n2,b\n", false, "")
	f.Add("id, label\n1, 0.5\n2,2\n", "label,id\n1.5,2\n0.5,1\n", false, "")
	f.Add("id,label\n1,cat\n2,dog\n", "id,label\n1,cat\n2,cat\n", true, "cat")
	f.Add("id,label\n1,\"a,b\"\n", "id,label\n1,\"a\nb\"\n", false, "")
	f.Add("id,label\n1,inf\n2,-inf\n", "id,label\n1,-inf\n2,1e308\n", false, "")
	f.Add("id,label\n1,NaN\n", "id,label\n1,1\n", false, "")
	f.Fuzz(func(t *testing.T, truth, pred string, binary bool, positive string) {
		o := Options{}
		if binary {
			o.Average, o.Positive = "binary", positive
		}
		s, err := Score(context.Background(), strings.NewReader(pred), strings.NewReader(truth), o)
		if err != nil {
			return
		}
		r := csv.NewReader(strings.NewReader(truth))
		r.TrimLeadingSpace = true
		recs, err := r.ReadAll()
		if err != nil {
			t.Fatalf("Score accepted a truth CSV encoding/csv refuses: %v", err)
		}
		if s.Rows != len(recs)-1 || s.Rows <= 0 {
			t.Fatalf("rows %d, the truth has %d data rows", s.Rows, len(recs)-1)
		}
		total, diag := 0, 0
		for tl, row := range s.Confusion {
			for pl, n := range row {
				if n <= 0 {
					t.Fatalf("confusion[%q][%q] = %d", tl, pl, n)
				}
				total += n
				if tl == pl {
					diag += n
				}
			}
		}
		if total != s.Rows {
			t.Fatalf("confusion counts sum to %d, rows %d", total, s.Rows)
		}
		if want := float64(diag) / float64(s.Rows); math.Abs(s.Accuracy-want) > 1e-12 {
			t.Fatalf("accuracy %v, the confusion's diagonal says %v", s.Accuracy, want)
		}
		support := 0
		for c, cf := range s.PerClass {
			for _, v := range []float64{cf.Precision, cf.Recall, cf.F1} {
				if !(v >= 0 && v <= 1) {
					t.Fatalf("class %q: %+v out of [0, 1]", c, cf)
				}
			}
			support += cf.Support
		}
		if support != s.Rows {
			t.Fatalf("supports sum to %d, rows %d", support, s.Rows)
		}
		if !(s.F1 >= 0 && s.F1 <= 1) {
			t.Fatalf("f1 %v out of [0, 1]", s.F1)
		}
		if s.RMSE != nil && !(*s.RMSE >= 0) {
			t.Fatalf("rmse %v is not a non-negative number", *s.RMSE)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("the scores do not encode to JSON (the handler would fail the task): %v", err)
		}
		var back Scores
		if err := json.Unmarshal(b, &back); err != nil || back.Rows != s.Rows {
			t.Fatalf("the scores' JSON does not decode back: %v", err)
		}
	})
}
