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
//   - rmse: sqrt(mean((prediction-truth)²)) when every label parses as a number,
//     else null.
//
// Malformed CSV fails (not retryable) with the input, line and column.
package main

import (
	"bytes"
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

type row struct {
	label string
	line  int
}

// readCSV reads id → label from one input, with errors naming input, line, column.
func readCSV(input string, data []byte, o Options) (map[string]row, []string, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err == io.EOF {
		return nil, nil, fmt.Errorf("%s: empty file: want a header row with %q and %q", input, o.IDColumn, o.LabelColumn)
	}
	if err != nil {
		return nil, nil, csvErr(input, err)
	}
	idCol, labelCol := -1, -1
	for i, h := range header {
		switch strings.TrimSpace(h) {
		case o.IDColumn:
			idCol = i
		case o.LabelColumn:
			labelCol = i
		}
	}
	if idCol < 0 || labelCol < 0 {
		missing := o.IDColumn
		if idCol >= 0 {
			missing = o.LabelColumn
		}
		return nil, nil, fmt.Errorf("%s: line 1: no column %q in header %v (set id_column / label_column in the payload)", input, missing, header)
	}
	rows := map[string]row{}
	var order []string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, csvErr(input, err)
		}
		line, _ := r.FieldPos(0)
		id := strings.TrimSpace(rec[idCol])
		if id == "" {
			return nil, nil, fmt.Errorf("%s: line %d, column %d: empty %s", input, line, idCol+1, o.IDColumn)
		}
		if prev, dup := rows[id]; dup {
			return nil, nil, fmt.Errorf("%s: line %d, column %d: id %q already given on line %d", input, line, idCol+1, id, prev.line)
		}
		rows[id] = row{label: strings.TrimSpace(rec[labelCol]), line: line}
		order = append(order, id)
	}
	return rows, order, nil
}

func csvErr(input string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: line %d, column %d: %v", input, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("%s: %v", input, err)
}

// Score computes the scores of predictions against truth.
func Score(predictions, truth []byte, o Options) (Scores, error) {
	if err := o.defaults(); err != nil {
		return Scores{}, err
	}
	tr, order, err := readCSV(o.TruthInput, truth, o)
	if err != nil {
		return Scores{}, err
	}
	pr, porder, err := readCSV(o.PredictionsInput, predictions, o)
	if err != nil {
		return Scores{}, err
	}
	if len(tr) == 0 {
		return Scores{}, fmt.Errorf("%s: no rows after the header", o.TruthInput)
	}
	for _, id := range porder {
		if _, ok := tr[id]; !ok {
			return Scores{}, fmt.Errorf("%s: line %d: id %q is not in %s", o.PredictionsInput, pr[id].line, id, o.TruthInput)
		}
	}
	for _, id := range order {
		if _, ok := pr[id]; !ok {
			return Scores{}, fmt.Errorf("%s: no prediction for id %q (%s line %d)", o.PredictionsInput, id, o.TruthInput, tr[id].line)
		}
	}
	s := Scores{Rows: len(order), Average: o.Average, PerClass: map[string]ClassF1{}, Confusion: map[string]map[string]int{}}
	tp, fp, fn := map[string]int{}, map[string]int{}, map[string]int{}
	classes := map[string]bool{}
	correct := 0
	numeric := true
	var sq float64
	for _, id := range order {
		t, p := tr[id].label, pr[id].label
		classes[t], classes[p] = true, true
		if s.Confusion[t] == nil {
			s.Confusion[t] = map[string]int{}
		}
		s.Confusion[t][p]++
		if t == p {
			correct++
			tp[t]++
		} else {
			fp[p]++
			fn[t]++
		}
		if numeric {
			tv, err1 := strconv.ParseFloat(t, 64)
			pv, err2 := strconv.ParseFloat(p, 64)
			if err1 != nil || err2 != nil {
				numeric = false
			} else {
				sq += (pv - tv) * (pv - tv)
			}
		}
	}
	s.Accuracy = float64(correct) / float64(len(order))
	names := make([]string, 0, len(classes))
	for c := range classes {
		names = append(names, c)
	}
	sort.Strings(names)
	var sum float64
	for _, c := range names {
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
		s.F1 = sum / float64(len(names))
	}
	if numeric {
		r := math.Sqrt(sq / float64(len(order)))
		s.RMSE = &r
	}
	return s, nil
}

type scorer struct{}

var _ sdk.Handler = scorer{}

func (scorer) Describe() []sdk.TaskType {
	return []sdk.TaskType{{Name: "score", Version: "1.0.0", Concurrency: 4, Description: "accuracy, F1 and RMSE of a predictions CSV against ground truth"}}
}

func (scorer) Handle(_ context.Context, req sdk.Request) (sdk.Response, error) {
	var o Options
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &o); err != nil {
			return sdk.Response{}, sdk.Fatalf("score: payload is not JSON like {\"id_column\":\"id\",\"label_column\":\"label\"}: %v", err)
		}
	}
	if err := o.defaults(); err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	pred, ok1 := req.Inputs[o.PredictionsInput]
	truth, ok2 := req.Inputs[o.TruthInput]
	if !ok1 || !ok2 {
		return sdk.Response{}, sdk.Fatalf("score: needs inputs %q and %q (names configurable with predictions_input / truth_input)", o.PredictionsInput, o.TruthInput)
	}
	s, err := Score(pred, truth, o)
	if err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	return sdk.Response{Output: b}, nil
}

func main() { sdk.Serve(scorer{}) }
