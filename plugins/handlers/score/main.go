// Command score is a Paddock handler that scores a competition submission: a
// predictions CSV against a ground-truth CSV.
//
// Task type "score". Inputs: "predictions" and "truth" (CSV with a header row;
// names configurable). Payload (JSON, optional):
//
//	{"id_column": "id", "label_column": "label", "average": "macro", "positive": "1",
//	 "predictions_input": "predictions", "truth_input": "truth"}
//
// Rows are matched by id; every truth id needs exactly one prediction and no
// prediction may name an unknown id. Output (JSON):
//
//   - accuracy: share of rows whose predicted label equals the true label
//     (exact string match after trimming spaces);
//   - f1: with "average":"macro" (the default) the unweighted mean over every
//     class seen in truth or predictions of 2·P·R/(P+R) (0 for a class with no
//     true or predicted positives), as scikit-learn's f1_score(average="macro");
//     with "average":"binary" the F1 of the class named by "positive";
//   - rmse: sqrt(mean((prediction-truth)²)) when every label parses as a finite
//     number and the result is finite, else null.
//
// Malformed CSV fails (not retryable) with the input, line and column.
package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/paddockvm/paddock/plugins/sdk"
)

// Options is the payload.
type Options struct {
	IDColumn         string `json:"id_column"`
	LabelColumn      string `json:"label_column"`
	Average          string `json:"average"`
	Positive         string `json:"positive"`
	PredictionsInput string `json:"predictions_input"`
	TruthInput       string `json:"truth_input"`
}

// Scores is the output.
type Scores struct {
	Rows      int                       `json:"rows"`
	Accuracy  float64                   `json:"accuracy"`
	F1        float64                   `json:"f1"`
	Average   string                    `json:"f1_average"`
	RMSE      *float64                  `json:"rmse"`
	PerClass  map[string]ClassF1        `json:"per_class"`
	Confusion map[string]map[string]int `json:"confusion"`
}

// ClassF1 is one class's precision, recall and F1.
type ClassF1 struct {
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
	Support   int     `json:"support"`
}

func (o *Options) defaults() error {
	if o.IDColumn == "" {
		o.IDColumn = "id"
	}
	if o.LabelColumn == "" {
		o.LabelColumn = "label"
	}
	if o.PredictionsInput == "" {
		o.PredictionsInput = "predictions"
	}
	if o.TruthInput == "" {
		o.TruthInput = "truth"
	}
	switch o.Average {
	case "":
		o.Average = "macro"
	case "macro":
	case "binary":
		if o.Positive == "" {
			return errors.New(`score: payload average "binary" needs "positive" (the label of the positive class)`)
		}
	default:
		return fmt.Errorf(`score: payload average %q: use "macro" or "binary"`, o.Average)
	}
	return nil
}

// table reads one CSV input row by row: its header located the id and label
// columns; errors name the input, line and column.
type table struct {
	input           string
	r               *csv.Reader
	idCol, labelCol int
	o               Options
}

func openTable(input string, rd io.Reader, o Options) (*table, error) {
	r := csv.NewReader(rd)
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	header, err := r.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%s: empty file: want a header row with %q and %q", input, o.IDColumn, o.LabelColumn)
	}
	if err != nil {
		return nil, csvErr(input, err)
	}
	t := &table{input: input, r: r, idCol: -1, labelCol: -1, o: o}
	for i, h := range header {
		switch strings.TrimSpace(h) {
		case o.IDColumn:
			t.idCol = i
		case o.LabelColumn:
			t.labelCol = i
		}
	}
	if t.idCol < 0 || t.labelCol < 0 {
		missing := o.IDColumn
		if t.idCol >= 0 {
			missing = o.LabelColumn
		}
		return nil, fmt.Errorf("%s: line 1: no column %q in header %v (set id_column / label_column in the payload)", input, missing, header)
	}
	return t, nil
}

// next returns the next row's id, label and line; io.EOF after the last. The
// strings are valid until the following call (the record is reused).
func (t *table) next() (id, label string, line int, err error) {
	rec, err := t.r.Read()
	if err == io.EOF {
		return "", "", 0, io.EOF
	}
	if err != nil {
		return "", "", 0, csvErr(t.input, err)
	}
	line, _ = t.r.FieldPos(0)
	id = strings.TrimSpace(rec[t.idCol])
	if id == "" {
		return "", "", 0, fmt.Errorf("%s: line %d, column %d: empty %s", t.input, line, t.idCol+1, t.o.IDColumn)
	}
	return id, strings.TrimSpace(rec[t.labelCol]), line, nil
}

func csvErr(input string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: line %d, column %d: %v", input, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("%s: %v", input, err)
}

// truthRow is what is kept of one ground-truth row while predictions stream by
// (12 bytes; with its id in the index map, about 50 bytes a row in all).
type truthRow struct {
	label    int32 // index into classes.names
	line     int32 // its line in the truth input
	predLine int32 // line of its prediction; 0 until seen
}

// maxLine is the last line number a truthRow can hold.
const maxLine = math.MaxInt32

// classes interns labels: a large CSV has few distinct ones.
type classes struct {
	names []string
	index map[string]int32
}

func (c *classes) id(label string) int32 {
	if i, ok := c.index[label]; ok {
		return i
	}
	i := int32(len(c.names))
	label = strings.Clone(label)
	c.names = append(c.names, label)
	c.index[label] = i
	return i
}

// Score computes the scores of predictions against truth. It holds the truth's
// ids in memory (about 50 bytes a row plus the id) and streams the predictions.
func Score(ctx context.Context, predictions, truth io.Reader, o Options) (Scores, error) {
	if err := o.defaults(); err != nil {
		return Scores{}, err
	}
	tt, err := openTable(o.TruthInput, truth, o)
	if err != nil {
		return Scores{}, err
	}
	cl := classes{index: map[string]int32{}}
	index := map[string]int32{} // id → rows[i]
	var rows []truthRow
	for {
		id, label, line, err := tt.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Scores{}, err
		}
		if line > maxLine {
			return Scores{}, fmt.Errorf("%s: line %d: more lines than score handles (%d)", o.TruthInput, line, maxLine)
		}
		if i, dup := index[id]; dup {
			return Scores{}, fmt.Errorf("%s: line %d, column %d: id %q already given on line %d", o.TruthInput, line, tt.idCol+1, id, rows[i].line)
		}
		if len(rows)%65536 == 0 && ctx.Err() != nil {
			return Scores{}, ctx.Err()
		}
		index[strings.Clone(id)] = int32(len(rows))
		rows = append(rows, truthRow{label: cl.id(label), line: int32(line)})
	}
	if len(rows) == 0 {
		return Scores{}, fmt.Errorf("%s: no rows after the header", o.TruthInput)
	}
	pt, err := openTable(o.PredictionsInput, predictions, o)
	if err != nil {
		return Scores{}, err
	}
	confusion := map[[2]int32]int{} // (true, predicted) → rows
	seen := 0
	for n := 0; ; n++ {
		id, label, line, err := pt.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Scores{}, err
		}
		if n%65536 == 0 && ctx.Err() != nil {
			return Scores{}, ctx.Err()
		}
		i, ok := index[id]
		if !ok {
			return Scores{}, fmt.Errorf("%s: line %d: id %q is not in %s", o.PredictionsInput, line, id, o.TruthInput)
		}
		tr := &rows[i]
		if tr.predLine != 0 {
			return Scores{}, fmt.Errorf("%s: line %d, column %d: id %q already given on line %d", o.PredictionsInput, line, pt.idCol+1, id, tr.predLine)
		}
		if line > maxLine {
			return Scores{}, fmt.Errorf("%s: line %d: more lines than score handles (%d)", o.PredictionsInput, line, maxLine)
		}
		tr.predLine = int32(line)
		confusion[[2]int32{tr.label, cl.id(label)}]++
		seen++
	}
	if seen < len(rows) { // name the first truth row without a prediction
		first := 0
		for first < len(rows) && rows[first].predLine != 0 {
			first++
		}
		var missing string
		for id, i := range index {
			if int(i) == first {
				missing = id
				break
			}
		}
		return Scores{}, fmt.Errorf("%s: no prediction for id %q (%s line %d)", o.PredictionsInput, missing, o.TruthInput, rows[first].line)
	}
	return scores(len(rows), confusion, cl.names, o), nil
}

// scores turns the confusion counts into the output.
func scores(n int, confusion map[[2]int32]int, names []string, o Options) Scores {
	s := Scores{Rows: n, Average: o.Average, PerClass: map[string]ClassF1{}, Confusion: map[string]map[string]int{}}
	tp, fp, fn := map[string]int{}, map[string]int{}, map[string]int{}
	values := make([]float64, len(names))
	numeric := true
	for i, c := range names {
		v, err := strconv.ParseFloat(c, 64)
		values[i], numeric = v, numeric && err == nil && !math.IsInf(v, 0) && !math.IsNaN(v) // "inf", "nan" are no scores
	}
	correct := 0
	var sq float64
	for k, cnt := range confusion {
		t, p := names[k[0]], names[k[1]]
		if s.Confusion[t] == nil {
			s.Confusion[t] = map[string]int{}
		}
		s.Confusion[t][p] += cnt
		if t == p {
			correct += cnt
			tp[t] += cnt
		} else {
			fp[p] += cnt
			fn[t] += cnt
		}
		d := values[k[1]] - values[k[0]]
		sq += float64(cnt) * d * d
	}
	s.Accuracy = float64(correct) / float64(n)
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	var sum float64
	for _, c := range sorted {
		var cf ClassF1
		if d := tp[c] + fp[c]; d > 0 {
			cf.Precision = float64(tp[c]) / float64(d)
		}
		if d := tp[c] + fn[c]; d > 0 {
			cf.Recall = float64(tp[c]) / float64(d)
		}
		if cf.Precision+cf.Recall > 0 {
			cf.F1 = 2 * cf.Precision * cf.Recall / (cf.Precision + cf.Recall)
		}
		cf.Support = tp[c] + fn[c]
		s.PerClass[c] = cf
		sum += cf.F1
	}
	if o.Average == "binary" {
		s.F1 = s.PerClass[o.Positive].F1
	} else {
		s.F1 = sum / float64(len(sorted))
	}
	if r := math.Sqrt(sq / float64(n)); numeric && !math.IsInf(r, 0) { // JSON has no Inf (squares can overflow)
		s.RMSE = &r
	}
	return s
}

type scorer struct{}

var _ sdk.Handler = scorer{}

func (scorer) Describe() []sdk.TaskType {
	return []sdk.TaskType{{Name: "score", Version: "1.0.0", Concurrency: 4, Description: "accuracy, F1 and RMSE of a predictions CSV against ground truth"}}
}

func (scorer) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	var o Options
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &o); err != nil {
			return sdk.Response{}, sdk.Fatalf("score: payload is not JSON like {\"id_column\":\"id\",\"label_column\":\"label\"}: %v", err)
		}
	}
	if err := o.defaults(); err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	pred, err1 := req.Input(o.PredictionsInput)
	truth, err2 := req.Input(o.TruthInput)
	for _, in := range []sdk.Input{pred, truth} {
		if in != nil {
			defer in.Close()
		}
	}
	if pred == nil || truth == nil {
		return sdk.Response{}, sdk.Fatalf("score: needs inputs %q and %q (names configurable with predictions_input / truth_input): %v", o.PredictionsInput, o.TruthInput, errors.Join(err1, err2))
	}
	s, err := Score(ctx, pred, truth, o)
	if err != nil {
		if ctx.Err() != nil {
			return sdk.Response{}, err
		}
		return sdk.Response{}, sdk.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	return sdk.Response{Output: b}, nil
}

func main() { sdk.Serve(scorer{}) }
