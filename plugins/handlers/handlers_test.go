package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/plugins/internal/plugintest"
	"github.com/paddockvm/paddock/plugins/runner"
)

// r runs every example handler as a real plugin subprocess.
var r *runner.Runner

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "paddock-handlers-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins, err := plugintest.Build(dir, "checksum", "logscan", "score", "compress")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var specs []runner.HandlerSpec
	for _, b := range bins {
		specs = append(specs, runner.HandlerSpec{Name: b.Name, Path: b.Path, SHA256: b.SHA256})
	}
	r, err = runner.New(context.Background(), runner.Config{Handlers: specs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	return m.Run()
}

func execute(t *testing.T, typ, payload string, inputs map[string][]byte) runner.Result {
	t.Helper()
	return r.Execute(context.Background(), runner.Task{ID: t.Name(), Type: typ, Payload: []byte(payload), Inputs: inputs})
}

func mustOK(t *testing.T, res runner.Result, v any) {
	t.Helper()
	if !res.OK() {
		t.Fatalf("task failed: %s (reason %s)", res.Error, res.Reason)
	}
	if v != nil {
		if err := json.Unmarshal(res.Output, v); err != nil {
			t.Fatalf("output %s: %v", res.Output, err)
		}
	}
}

func TestTypesRegistered(t *testing.T) {
	got := map[string]string{}
	for _, tt := range r.Types() {
		got[tt.Name] = tt.Handler
	}
	for typ, h := range map[string]string{
		"checksum": "checksum", "logscan": "logscan", "score": "score",
		"compress.gzip": "compress", "compress.zstd": "compress", "decompress.gzip": "compress", "decompress.zstd": "compress",
	} {
		if got[typ] != h {
			t.Errorf("type %s served by %q, want %q", typ, got[typ], h)
		}
	}
}

func TestChecksum(t *testing.T) {
	var out struct {
		Inputs map[string]struct {
			Size   int    `json:"size"`
			SHA256 string `json:"sha256"`
			CRC32  string `json:"crc32"`
		} `json:"inputs"`
	}
	mustOK(t, execute(t, "checksum", "", map[string][]byte{"hello": []byte("hello world"), "empty": {}}), &out)
	// Reference values: `printf 'hello world' | sha256sum` and `| gzip -c | tail -c8 | od -t x4 -N4`.
	if h := out.Inputs["hello"]; h.Size != 11 || h.SHA256 != "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9" || h.CRC32 != "0d4a1185" {
		t.Errorf("hello: %+v", h)
	}
	if e := out.Inputs["empty"]; e.Size != 0 || e.SHA256 != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" || e.CRC32 != "00000000" {
		t.Errorf("empty: %+v", e)
	}
	res := execute(t, "checksum", `{"algorithms":["md5"]}`, map[string][]byte{"x": nil})
	if res.OK() || res.Retryable || !strings.Contains(res.Error, "algorithms[0]") {
		t.Errorf("unknown algorithm: %+v", res)
	}
	if res := execute(t, "checksum", "", nil); res.OK() || !strings.Contains(res.Error, "no input blobs") {
		t.Errorf("no inputs: %+v", res)
	}
}

const sampleLog = `2024-01-01 INFO starting
2024-01-01 WARN disk 91% full
2024-01-01 ERROR connection to 10.0.0.1 timed out after 30s
2024-01-01 ERROR connection to 10.0.0.2 timed out after 31s
2024-01-01 error: bad request id=7
plain line without level
2024-01-01 WARNING retrying
2024-01-01 CRITICAL out of memory
`

func TestLogscan(t *testing.T) {
	var rep struct {
		Lines     int            `json:"lines"`
		Levels    map[string]int `json:"levels"`
		TopErrors []struct {
			Message string `json:"message"`
			Count   int    `json:"count"`
		} `json:"top_errors"`
		Patterns []struct {
			Pattern string `json:"pattern"`
			Count   int    `json:"count"`
			Matches []struct {
				Input string `json:"input"`
				Line  int    `json:"line"`
			} `json:"matches"`
		} `json:"patterns"`
	}
	mustOK(t, execute(t, "logscan", `{"patterns":["timed out","^nomatch$"],"top":2}`, map[string][]byte{"app.log": []byte(sampleLog)}), &rep)
	if rep.Lines != 8 {
		t.Errorf("lines = %d, want 8", rep.Lines)
	}
	wantLevels := map[string]int{"info": 1, "warn": 2, "error": 3, "fatal": 1, "unknown": 1}
	for k, v := range wantLevels {
		if rep.Levels[k] != v {
			t.Errorf("levels[%s] = %d, want %d (all: %v)", k, rep.Levels[k], v, rep.Levels)
		}
	}
	if len(rep.TopErrors) != 2 || rep.TopErrors[0].Message != "connection to N.N.N.N timed out after Ns" || rep.TopErrors[0].Count != 2 ||
		rep.TopErrors[1].Message != "bad request id=N" || rep.TopErrors[1].Count != 1 {
		t.Errorf("top errors = %+v", rep.TopErrors)
	}
	if len(rep.Patterns) != 2 || rep.Patterns[0].Count != 2 || len(rep.Patterns[0].Matches) != 2 ||
		rep.Patterns[0].Matches[0].Line != 3 || rep.Patterns[0].Matches[1].Line != 4 || rep.Patterns[0].Matches[0].Input != "app.log" || rep.Patterns[1].Count != 0 {
		t.Errorf("patterns = %+v", rep.Patterns)
	}
	res := execute(t, "logscan", `{"patterns":["ok","("]}`, map[string][]byte{"a": []byte("x")})
	if res.OK() || res.Retryable || !strings.Contains(res.Error, "patterns[1]") {
		t.Errorf("bad pattern: %+v", res)
	}
}

type scores struct {
	Rows     int      `json:"rows"`
	Accuracy float64  `json:"accuracy"`
	F1       float64  `json:"f1"`
	Average  string   `json:"f1_average"`
	RMSE     *float64 `json:"rmse"`
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestScoreMulticlassMacroF1(t *testing.T) {
	truth := "id,label\n1,cat\n2,cat\n3,dog\n4,dog\n5,bird\n6,cat\n"
	pred := "id,label\n6,dog\n1,cat\n2,dog\n3,dog\n4,dog\n5,cat\n" // other order on purpose
	// By hand: right on ids 1,3,4 → accuracy 3/6 = 0.5.
	// cat:  tp 1 (id 1), fp 1 (id 5), fn 2 (ids 2,6) → P 1/2, R 1/3, F1 = 2·(1/6)/(5/6) = 2/5
	// dog:  tp 2 (ids 3,4), fp 2 (ids 2,6), fn 0     → P 1/2, R 1,   F1 = 2·(1/2)/(3/2) = 2/3
	// bird: tp 0, fp 0, fn 1                          → F1 0
	// macro F1 = (2/5 + 2/3 + 0)/3 = 16/45. Labels are not numbers → rmse null.
	var s scores
	mustOK(t, execute(t, "score", "", map[string][]byte{"truth": []byte(truth), "predictions": []byte(pred)}), &s)
	if s.Rows != 6 || !near(s.Accuracy, 0.5) || !near(s.F1, 16.0/45) || s.Average != "macro" || s.RMSE != nil {
		t.Fatalf("scores = %+v, want rows 6, accuracy 0.5, macro F1 16/45 = %.6f, rmse null", s, 16.0/45)
	}
}

func TestScoreBinaryF1AndRMSE(t *testing.T) {
	truth := "id,label\na,1\nb,0\nc,1\nd,1\ne,0\n"
	pred := "label,id\n1,a\n1,b\n0,c\n1,d\n0,e\n" // columns found by name
	// By hand: right on a,d,e → accuracy 3/5 = 0.6. Positive "1": tp 2 (a,d),
	// fp 1 (b), fn 1 (c) → P 2/3, R 2/3, F1 2/3. Errors 0,1,1,0,0 → RMSE sqrt(2/5).
	var s scores
	mustOK(t, execute(t, "score", `{"average":"binary","positive":"1"}`, map[string][]byte{"truth": []byte(truth), "predictions": []byte(pred)}), &s)
	if !near(s.Accuracy, 0.6) || !near(s.F1, 2.0/3) || s.RMSE == nil || !near(*s.RMSE, math.Sqrt(0.4)) {
		t.Fatalf("scores = %+v (rmse %v), want accuracy 0.6, F1 2/3, rmse %.6f", s, s.RMSE, math.Sqrt(0.4))
	}
}

func TestScoreErrors(t *testing.T) {
	truth := "id,label\n1,cat\n2,dog\n"
	for _, tc := range []struct {
		name, pred, payload, want string
	}{
		{"wrong field count", "id,label\n1,cat\n2,dog,extra\n", "", "predictions: line 3, column 1: wrong number of fields"},
		{"bare quote", "id,label\n1,cat\n2,d\"og\n", "", "predictions: line 3, column 4: bare \" in non-quoted-field"},
		{"missing column", "id,prediction\n1,cat\n2,dog\n", "", `predictions: line 1: no column "label"`},
		{"duplicate id", "id,label\n1,cat\n1,dog\n", "", `predictions: line 3, column 1: id "1" already given on line 2`},
		{"unknown id", "id,label\n1,cat\n2,dog\n3,dog\n", "", `predictions: line 4: id "3" is not in truth`},
		{"missing prediction", "id,label\n1,cat\n", "", `no prediction for id "2" (truth line 3)`},
		{"binary without positive", "id,label\n1,cat\n2,dog\n", `{"average":"binary"}`, `needs "positive"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := execute(t, "score", tc.payload, map[string][]byte{"truth": []byte(truth), "predictions": []byte(tc.pred)})
			if res.OK() || res.Retryable || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("got %q (retryable %v), want a fatal error containing %q", res.Error, res.Retryable, tc.want)
			}
		})
	}
}

func TestCompressRoundTrip(t *testing.T) {
	in := bytes.Repeat([]byte("paddock compresses this line again and again\n"), 2000)
	for _, tc := range []struct{ algo, ext, magic string }{
		{"gzip", ".gz", "\x1f\x8b"},
		{"zstd", ".zst", "\x28\xb5\x2f\xfd"},
	} {
		t.Run(tc.algo, func(t *testing.T) {
			res := execute(t, "compress."+tc.algo, "", map[string][]byte{"data.txt": in})
			mustOK(t, res, nil)
			c := res.Outputs["data.txt"+tc.ext]
			if !bytes.Equal(c, res.Output) || !bytes.HasPrefix(c, []byte(tc.magic)) || len(c) >= len(in)/10 {
				t.Fatalf("compressed %d → %d bytes, prefix %x: want the %s magic and at least 10× smaller", len(in), len(c), c[:min(4, len(c))], tc.algo)
			}
			back := execute(t, "decompress."+tc.algo, "", map[string][]byte{"data.txt" + tc.ext: c})
			mustOK(t, back, nil)
			if !bytes.Equal(back.Outputs["data.txt"], in) {
				t.Fatalf("round trip changed the data (%d bytes back)", len(back.Outputs["data.txt"]))
			}
			bad := execute(t, "decompress."+tc.algo, "", map[string][]byte{"junk" + tc.ext: []byte("not compressed at all")})
			if bad.OK() || bad.Retryable || !strings.Contains(bad.Error, "junk"+tc.ext) {
				t.Fatalf("decompressing junk: %+v", bad)
			}
		})
	}
	if res := execute(t, "compress.gzip", `{"level":12}`, map[string][]byte{"a": in}); res.OK() || !strings.Contains(res.Error, "level 12") {
		t.Fatalf("bad level: %+v", res)
	}
}
