package handlers_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/paddockvm/paddock/plugins/runner"
)

// These tests hand the handlers inputs far larger than anything that may cross
// the plugin's gRPC connection, as files, and check the handler processes'
// peak memory (VmHWM) stays far below the input's size.

// rssLimit is the peak resident memory a streaming handler may reach (its
// inputs are 128 MiB to 1 GiB).
const rssLimit = 96 << 20

func fileDigest(t *testing.T, path string) (int64, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return n, "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func inputFile(t *testing.T, path string) runner.InputFile {
	n, d := fileDigest(t, path)
	return runner.InputFile{Path: path, Size: n, Digest: d}
}

// peakRSS returns the VmHWM of the running process of the named handler.
func peakRSS(t *testing.T, handler string) int64 {
	t.Helper()
	for _, st := range r.Status() {
		if st.Name != handler {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
		if err != nil {
			t.Fatalf("reading the status of handler %s: %v", handler, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					t.Fatalf("VmHWM line %q: %v", line, err)
				}
				return kb << 10
			}
		}
		t.Fatalf("no VmHWM in /proc/%d/status", st.PID)
	}
	t.Fatalf("no handler %s", handler)
	return 0
}

func checkRSS(t *testing.T, handler string, inputBytes, limit int64) {
	t.Helper()
	rss := peakRSS(t, handler)
	t.Logf("handler %s: peak RSS (VmHWM) %.1f MiB for %.0f MiB of input", handler, float64(rss)/(1<<20), float64(inputBytes)/(1<<20))
	if rss > limit {
		t.Errorf("handler %s reached %d bytes resident (VmHWM), over %d: it does not stream", handler, rss, limit)
	}
}

// writeFile creates dir/name with what gen writes through a buffered writer.
func writeFile(t *testing.T, dir, name string, gen func(w *bufio.Writer)) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	gen(w)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestChecksumLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips hashing 1 GiB")
	}
	// 1 GiB, sparse, with 4 KiB of random bytes every 64 MiB so the content matters.
	p := filepath.Join(t.TempDir(), "big.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	blk := make([]byte, 4096)
	for off := int64(0); off < 1<<30; off += 64 << 20 {
		for i := range blk {
			blk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(blk, off+12345); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	in := inputFile(t, p)
	res := r.Execute(context.Background(), runner.Task{ID: t.Name(), Type: "checksum", Payload: []byte(`{"algorithms":["sha256","crc32c"]}`),
		InputFiles: map[string]runner.InputFile{"big.img": in}, Inputs: map[string][]byte{"small": []byte("hello world")}})
	var out struct {
		Inputs map[string]struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
			CRC32C string `json:"crc32c"`
		} `json:"inputs"`
	}
	mustOK(t, res, &out)
	if got := out.Inputs["big.img"]; got.Size != 1<<30 || "sha256:"+got.SHA256 != in.Digest || len(got.CRC32C) != 8 {
		t.Errorf("big.img: %+v, want size %d, sha256 %s and a crc32c", got, 1<<30, in.Digest)
	}
	if got := out.Inputs["small"]; got.SHA256 != "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9" || got.CRC32C != "c99465aa" {
		t.Errorf("small (inline): %+v", got)
	}
	checkRSS(t, "checksum", 1<<30, rssLimit)
}

// compressible writes n bytes of text-like data (words from a small vocabulary
// with random numbers), which zstd shrinks a few times but not trivially.
func compressible(n int64, seed uint64) func(*bufio.Writer) {
	return func(w *bufio.Writer) {
		rng := rand.New(rand.NewPCG(seed, seed))
		words := []string{"paddock", "guest", "blob", "stream", "digest", "lease", "host", "cache", "agent", "task"}
		var line []byte
		for written := int64(0); written < n; {
			line = append(line[:0], words[rng.IntN(len(words))]...)
			line = append(line, ' ')
			line = append(line, words[rng.IntN(len(words))]...)
			line = append(line, ' ')
			line = strconv.AppendUint(line, uint64(rng.Uint32()), 10)
			line = append(line, ' ')
			line = append(line, words[rng.IntN(len(words))]...)
			line = append(line, ' ')
			line = strconv.AppendUint(line, rng.Uint64(), 16)
			line = append(line, '\n')
			if rem := n - written; int64(len(line)) > rem {
				line = line[:rem]
			}
			w.Write(line)
			written += int64(len(line))
		}
	}
}

func TestCompressLargeRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips compressing 256 MiB")
	}
	const size = 256 << 20
	dir := t.TempDir()
	t0 := time.Now()
	in := inputFile(t, writeFile(t, dir, "data.txt", compressible(size, 7)))
	out1 := filepath.Join(dir, "out1")
	out2 := filepath.Join(dir, "out2")
	for _, d := range []string{out1, out2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	res := r.Execute(context.Background(), runner.Task{ID: "compress", Type: "compress.zstd", OutputDir: out1,
		InputFiles: map[string]runner.InputFile{"data.txt": in}})
	mustOK(t, res, nil)
	z, ok := res.OutputFiles["data.txt.zst"]
	zn, zd := fileDigest(t, filepath.Join(out1, "data.txt.zst"))
	if !ok || z.Size != zn || z.Digest != zd || zn >= size/2 {
		t.Fatalf("compress output files %+v; on disk %d bytes %s: want data.txt.zst, as reported, under half of %d", res.OutputFiles, zn, zd, size)
	}
	var sizes map[string]int64
	if err := json.Unmarshal(res.Output, &sizes); err != nil || sizes["data.txt.zst"] != zn {
		t.Errorf("Output %s: want {\"data.txt.zst\": %d}", res.Output, zn)
	}
	t.Logf("zstd: %d → %d bytes, with generating the input, in %v", size, zn, time.Since(t0))

	res = r.Execute(context.Background(), runner.Task{ID: "decompress", Type: "decompress.zstd", OutputDir: out2,
		InputFiles: map[string]runner.InputFile{"data.txt.zst": {Path: filepath.Join(out1, "data.txt.zst"), Size: z.Size, Digest: z.Digest}}})
	mustOK(t, res, nil)
	if got := res.OutputFiles["data.txt"]; got.Size != size || got.Digest != in.Digest {
		t.Fatalf("decompressed: %+v, want %d bytes with the original's digest %s", got, size, in.Digest)
	}
	if n, d := fileDigest(t, filepath.Join(out2, "data.txt")); n != size || d != in.Digest {
		t.Fatalf("decompressed file on disk: %d bytes %s, want the original's %d bytes %s", n, d, size, in.Digest)
	}
	checkRSS(t, "compress", size, rssLimit)
}

func TestCompressGzipFileRoundTrip(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	in := inputFile(t, writeFile(t, dir, "x.log", compressible(size, 9)))
	out1, out2 := t.TempDir(), t.TempDir()
	res := r.Execute(context.Background(), runner.Task{ID: "gz", Type: "compress.gzip", OutputDir: out1, InputFiles: map[string]runner.InputFile{"x.log": in}})
	mustOK(t, res, nil)
	gz := res.OutputFiles["x.log.gz"]
	res = r.Execute(context.Background(), runner.Task{ID: "gunzip", Type: "decompress.gzip", OutputDir: out2,
		InputFiles: map[string]runner.InputFile{"x.log.gz": {Path: filepath.Join(out1, "x.log.gz"), Size: gz.Size, Digest: gz.Digest}}})
	mustOK(t, res, nil)
	if got := res.OutputFiles["x.log"]; got.Size != size || got.Digest != in.Digest {
		t.Fatalf("gzip round trip: %+v, want %d bytes %s", got, size, in.Digest)
	}
}

func TestCompressOutputErrors(t *testing.T) {
	dir := t.TempDir()
	in := inputFile(t, writeFile(t, dir, "in", compressible(4<<20, 3)))
	// Output larger than the task allows: the handler stops writing, the task fails.
	out := t.TempDir()
	res := r.Execute(context.Background(), runner.Task{ID: "too-large", Type: "compress.zstd", OutputDir: out, MaxOutputBytes: 64 << 10,
		InputFiles: map[string]runner.InputFile{"in": in}})
	if res.OK() || res.Reason != runner.ReasonOutputTooLarge || res.Retryable || !strings.Contains(res.Error, "limit of 65536 bytes") {
		t.Fatalf("too large: reason %s retryable %v %q, want a fatal output_too_large naming the limit", res.Reason, res.Retryable, res.Error)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("output dir holds %d entries after the failure, want none", len(ents))
	}
	// An input name that makes an invalid output name (129 characters with ".zst").
	long := strings.Repeat("n", 125)
	res = r.Execute(context.Background(), runner.Task{ID: "bad-name", Type: "compress.zstd", OutputDir: t.TempDir(),
		InputFiles: map[string]runner.InputFile{long: in}})
	if res.OK() || res.Retryable || !strings.Contains(res.Error, `creating output "`+long+`.zst": not a valid output name`) {
		t.Fatalf("bad output name: %+v", res)
	}
	// Inline, the output limit holds too.
	res = r.Execute(context.Background(), runner.Task{ID: "inline-too-large", Type: "decompress.zstd",
		Inputs: map[string][]byte{"z.zst": zstdOf(t, make([]byte, 200<<20))}})
	if res.OK() || res.Reason != runner.ReasonOutputTooLarge {
		t.Fatalf("inline decompression past the limit: %+v", res)
	}
}

// zstdOf compresses b in the test process.
func zstdOf(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func TestLogscanLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips scanning 128 MiB")
	}
	const size = 128 << 20
	want := map[string]int{}
	lines, matches := 0, 0
	p := writeFile(t, t.TempDir(), "big.log", func(w *bufio.Writer) {
		rng := rand.New(rand.NewPCG(3, 4))
		levels := []string{"INFO", "DEBUG", "WARN", "ERROR"}
		names := map[string]string{"INFO": "info", "DEBUG": "debug", "WARN": "warn", "ERROR": "error"}
		n := 0
		for n < size {
			var line string
			switch {
			case lines == 1000:
				// One line of 5 MiB: judged by its first 1 MiB (which holds the level).
				line = "2024-01-01 ERROR huge " + strings.Repeat("x", 5<<20) + " tail\n"
				want["error"]++
			case lines%100000 == 7:
				line = "no level here at all\n"
				want["unknown"]++
			default:
				lv := levels[rng.IntN(len(levels))]
				line = fmt.Sprintf("2024-01-01T00:00:%02d %s request %d served in %dms\n", lines%60, lv, rng.IntN(1000), rng.IntN(500))
				if lv == "ERROR" && rng.IntN(10) == 0 {
					line = fmt.Sprintf("2024-01-01 ERROR upstream timeout after %ds\n", rng.IntN(60))
					matches++
				}
				want[names[lv]]++
			}
			w.WriteString(line)
			n += len(line)
			lines++
		}
	})
	var rep struct {
		Lines     int            `json:"lines"`
		Levels    map[string]int `json:"levels"`
		LongLines int            `json:"long_lines"`
		TopErrors []struct {
			Message string `json:"message"`
			Count   int    `json:"count"`
		} `json:"top_errors"`
		Patterns []struct {
			Count   int `json:"count"`
			Matches []struct {
				Text string `json:"text"`
			} `json:"matches"`
		} `json:"patterns"`
	}
	in := inputFile(t, p)
	mustOK(t, r.Execute(context.Background(), runner.Task{ID: t.Name(), Type: "logscan", Payload: []byte(`{"patterns":["upstream timeout"],"max_matches":3}`),
		InputFiles: map[string]runner.InputFile{"big.log": in}}), &rep)
	if rep.Lines != lines || rep.LongLines != 1 {
		t.Errorf("lines %d (long %d), want %d (long 1)", rep.Lines, rep.LongLines, lines)
	}
	for lv, n := range want {
		if rep.Levels[lv] != n {
			t.Errorf("levels[%s] = %d, want %d", lv, rep.Levels[lv], n)
		}
	}
	if len(rep.Patterns) != 1 || rep.Patterns[0].Count != matches || len(rep.Patterns[0].Matches) != 3 {
		t.Errorf("pattern: %+v, want %d matches (3 listed)", rep.Patterns, matches)
	}
	if len(rep.TopErrors) == 0 || rep.TopErrors[0].Message != "request N served in Nms" {
		t.Errorf("top errors: %+v", rep.TopErrors)
	}
	checkRSS(t, "logscan", in.Size, rssLimit)
}

func TestScoreLargeCSV(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skips scoring 1M rows")
	}
	const rows = 1_000_000
	dir := t.TempDir()
	labels := []string{"cat", "dog", "bird", "fish"}
	rng := rand.New(rand.NewPCG(5, 6))
	truth := make([]int, rows)
	for i := range truth {
		truth[i] = rng.IntN(len(labels))
	}
	correct := 0
	tp := writeFile(t, dir, "truth.csv", func(w *bufio.Writer) {
		w.WriteString("id,label\n")
		for i, l := range truth {
			fmt.Fprintf(w, "row-%07d,%s\n", i, labels[l])
		}
	})
	pp := writeFile(t, dir, "pred.csv", func(w *bufio.Writer) {
		w.WriteString("label,id\n")
		for _, i := range rng.Perm(rows) { // another order
			l := truth[i]
			if rng.IntN(4) == 0 {
				l = rng.IntN(len(labels))
			}
			if l == truth[i] {
				correct++
			}
			fmt.Fprintf(w, "%s,row-%07d\n", labels[l], i)
		}
	})
	var s scores
	tin, pin := inputFile(t, tp), inputFile(t, pp)
	mustOK(t, r.Execute(context.Background(), runner.Task{ID: t.Name(), Type: "score",
		InputFiles: map[string]runner.InputFile{"truth": tin, "predictions": pin}}), &s)
	if s.Rows != rows || !near(s.Accuracy, float64(correct)/rows) || s.F1 <= 0 || s.RMSE != nil {
		t.Fatalf("scores %+v, want rows %d, accuracy %v", s, rows, float64(correct)/rows)
	}
	// score keeps the truth's ids (about 50 bytes a row plus the id), so its
	// memory grows with rows, not with the predictions' bytes; GC headroom doubles it.
	checkRSS(t, "score", tin.Size+pin.Size, rssLimit+2*70*rows)
}

// BenchmarkChecksum compares a 64 MiB input sent inline (through the plugin's
// gRPC connection) with the same input handed over as a file.
func BenchmarkChecksum(b *testing.B) {
	data := make([]byte, 64<<20)
	rng := rand.NewChaCha8([32]byte{8})
	rng.Read(data)
	p := filepath.Join(b.TempDir(), "in")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(data)
	file := runner.InputFile{Path: p, Size: int64(len(data)), Digest: "sha256:" + hex.EncodeToString(sum[:])}
	for _, tc := range []struct {
		name string
		task runner.Task
	}{
		{"inline", runner.Task{Type: "checksum", Payload: []byte(`{"algorithms":["sha256"]}`), Inputs: map[string][]byte{"in": data}}},
		{"file", runner.Task{Type: "checksum", Payload: []byte(`{"algorithms":["sha256"]}`), InputFiles: map[string]runner.InputFile{"in": file}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if res := r.Execute(context.Background(), tc.task); !res.OK() {
					b.Fatal(res.Error)
				}
			}
		})
	}
}
