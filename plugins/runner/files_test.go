package runner_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paddockvm/paddock/plugins/runner"
)

func filesRunner(t *testing.T, env ...string) *runner.Runner {
	return newRunner(t, func(c *runner.Config) {
		s := spec("testfiles")
		s.Env = env
		c.Handlers = []runner.HandlerSpec{s}
	})
}

// patternBytes is what testfiles writes for an output of n bytes: byte i is i%251.
func patternBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func writeInput(t *testing.T, name string, b []byte) runner.InputFile {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return runner.InputFile{Path: p, Size: int64(len(b)), Digest: digest(b)}
}

func payload(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInputFilesAndOutputFiles: a file input and an inline input both reach the
// handler through Request.Input, and come back as output files whose sizes and
// digests the SDK computed while writing.
func TestInputFilesAndOutputFiles(t *testing.T) {
	r := filesRunner(t)
	big := patternBytes(3<<20 + 7)
	out := t.TempDir()
	res := r.Execute(context.Background(), runner.Task{
		ID: "copy", Type: "files.copy",
		Inputs:     map[string][]byte{"small.txt": []byte("inline bytes")},
		InputFiles: map[string]runner.InputFile{"big.bin": writeInput(t, "big.bin", big)},
		OutputDir:  out,
	})
	if !res.OK() {
		t.Fatalf("files.copy: %+v", res)
	}
	want := map[string]runner.OutputFile{
		"big.bin":   {Size: int64(len(big)), Digest: digest(big)},
		"small.txt": {Size: 12, Digest: digest([]byte("inline bytes"))},
	}
	if len(res.OutputFiles) != len(want) {
		t.Fatalf("OutputFiles = %+v, want %+v", res.OutputFiles, want)
	}
	for name, w := range want {
		if got := res.OutputFiles[name]; got != w {
			t.Errorf("OutputFiles[%s] = %+v, want %+v", name, got, w)
		}
	}
	if b, err := os.ReadFile(filepath.Join(out, "big.bin")); err != nil || digest(b) != digest(big) {
		t.Errorf("big.bin in the output dir: %v, digest %s", err, digest(b))
	}
	if len(res.Outputs) != 0 {
		t.Errorf("inline Outputs %v, want none (all went to files)", res.Outputs)
	}

	// Without an OutputDir the same handler answers inline, as before.
	res = r.Execute(context.Background(), runner.Task{ID: "inline", Type: "files.copy",
		InputFiles: map[string]runner.InputFile{"big.bin": writeInput(t, "big.bin", big)}})
	if !res.OK() || digest(res.Outputs["big.bin"]) != digest(big) || len(res.OutputFiles) != 0 {
		t.Fatalf("files.copy without OutputDir: ok=%v err=%s, %d inline bytes, files %v", res.OK(), res.Error, len(res.Outputs["big.bin"]), res.OutputFiles)
	}
}

// TestHandWrittenOutputsAreReported: files a handler writes straight into
// OutputDir (not through CreateOutput) are hashed by the SDK and reported too,
// next to writer outputs and inline outputs.
func TestHandWrittenOutputsAreReported(t *testing.T) {
	r := filesRunner(t)
	res := r.Execute(context.Background(), runner.Task{ID: "write", Type: "files.write", OutputDir: t.TempDir(),
		Payload: payload(t, map[string]any{
			"writer": map[string]int{"w.bin": 100000},
			"hand":   map[string]int{"h.bin": 70000, "empty": 0},
			"inline": map[string]string{"note": "hi"},
		})})
	if !res.OK() {
		t.Fatalf("files.write: %+v", res)
	}
	for name, n := range map[string]int{"w.bin": 100000, "h.bin": 70000, "empty": 0} {
		if got, want := res.OutputFiles[name], (runner.OutputFile{Size: int64(n), Digest: digest(patternBytes(n))}); got != want {
			t.Errorf("OutputFiles[%s] = %+v, want %+v", name, got, want)
		}
	}
	if len(res.OutputFiles) != 3 || string(res.Outputs["note"]) != "hi" {
		t.Errorf("OutputFiles %v, Outputs %v", res.OutputFiles, res.Outputs)
	}
}

func TestOutputFileErrors(t *testing.T) {
	r := filesRunner(t)
	for _, tc := range []struct {
		name      string
		payload   map[string]any
		noDir     bool
		max       int64
		reason    runner.Reason
		want      string
		wantFiles []string // left in the output dir
	}{
		{name: "too large through a writer", max: 1 << 20, payload: map[string]any{"writer": map[string]int{"a": 600 << 10, "b": 600 << 10}},
			reason: runner.ReasonOutputTooLarge, want: "over the agent's limit of 1048576 bytes"},
		{name: "too large by hand", max: 1000, payload: map[string]any{"hand": map[string]int{"h": 1001}},
			reason: runner.ReasonOutputTooLarge, want: "output of 1001 bytes exceeds the agent's limit of 1000 bytes", wantFiles: []string{"h"}},
		{name: "bad output name", payload: map[string]any{"writer": map[string]int{"../escape": 1}},
			reason: runner.ReasonHandlerError, want: `creating output "../escape": not a valid output name`},
		{name: "dot file by hand", payload: map[string]any{"hand": map[string]int{".hidden": 1}},
			reason: runner.ReasonHandlerError, want: `".hidden", which is not a valid output name`, wantFiles: []string{".hidden"}},
		{name: "inline and file of one name", payload: map[string]any{"writer": map[string]int{"x": 1}, "inline": map[string]string{"x": "y"}},
			reason: runner.ReasonHandlerError, want: `output "x" is both inline`},
		{name: "no output dir", noDir: true, payload: map[string]any{"writer": map[string]int{"a": 1}},
			reason: runner.ReasonHandlerError, want: "this task has no output directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			task := runner.Task{ID: tc.name, Type: "files.write", Payload: payload(t, tc.payload), OutputDir: dir, MaxOutputBytes: tc.max}
			if tc.noDir {
				task.OutputDir = ""
			}
			res := r.Execute(context.Background(), task)
			if res.OK() || res.Reason != tc.reason || res.Retryable || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("got reason %s retryable %v error %q, want a fatal %s containing %q", res.Reason, res.Retryable, res.Error, tc.reason, tc.want)
			}
			// Files made through CreateOutput are removed when the task fails.
			ents, _ := os.ReadDir(dir)
			var left []string
			for _, e := range ents {
				left = append(left, e.Name())
			}
			if strings.Join(left, ",") != strings.Join(tc.wantFiles, ",") {
				t.Errorf("output dir holds %v after the failure, want %v", left, tc.wantFiles)
			}
		})
	}
}

// TestLyingHandlerFails: the runner checks the output files a handler reports
// (written without the SDK here) and fails the task naming the file.
func TestLyingHandlerFails(t *testing.T) {
	r := filesRunner(t, "PADDOCK_TESTFILES_LIE=1")
	good := digest(patternBytes(10))
	for _, tc := range []struct {
		name   string
		write  map[string]int
		report map[string]any
		noDir  bool
		max    int64
		reason runner.Reason
		want   string
	}{
		{name: "missing file", report: map[string]any{"ghost.bin": map[string]any{"size": 10, "digest": good}},
			reason: runner.ReasonBadOutput, want: `reported output file "ghost.bin", but `},
		{name: "wrong size", write: map[string]int{"a": 10}, report: map[string]any{"a": map[string]any{"size": 11, "digest": good}},
			reason: runner.ReasonBadOutput, want: `reported output file "a" of 11 bytes, but`},
		{name: "bad name", report: map[string]any{"../a": map[string]any{"size": 10, "digest": good}},
			reason: runner.ReasonBadOutput, want: `reported output file "../a": not a valid output name`},
		{name: "bad digest", write: map[string]int{"a": 10}, report: map[string]any{"a": map[string]any{"size": 10, "digest": "md5:x"}},
			reason: runner.ReasonBadOutput, want: `digest "md5:x"`},
		{name: "no output dir", noDir: true, report: map[string]any{"a": map[string]any{"size": 10, "digest": good}},
			reason: runner.ReasonBadOutput, want: "the task had no output directory"},
		{name: "over the task's limit", max: 15, write: map[string]int{"a": 10, "b": 10},
			report: map[string]any{"a": map[string]any{"size": 10, "digest": good}, "b": map[string]any{"size": 10, "digest": good}},
			reason: runner.ReasonOutputTooLarge, want: "total 20 bytes, over the task's limit of 15 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := runner.Task{ID: tc.name, Type: "files.lie", OutputDir: t.TempDir(), MaxOutputBytes: tc.max,
				Payload: payload(t, map[string]any{"write": tc.write, "report": tc.report})}
			if tc.noDir {
				task.OutputDir = ""
			}
			res := r.Execute(context.Background(), task)
			if res.OK() || res.Reason != tc.reason || res.Retryable || !strings.Contains(res.Error, tc.want) {
				t.Fatalf("got reason %s retryable %v error %q, want a fatal %s containing %q", res.Reason, res.Retryable, res.Error, tc.reason, tc.want)
			}
		})
	}
	// The same handler telling the truth passes.
	res := r.Execute(context.Background(), runner.Task{ID: "truth", Type: "files.lie", OutputDir: t.TempDir(),
		Payload: payload(t, map[string]any{"write": map[string]int{"a": 10}, "report": map[string]any{"a": map[string]any{"size": 10, "digest": good}}})})
	if !res.OK() || res.OutputFiles["a"] != (runner.OutputFile{Size: 10, Digest: good}) {
		t.Fatalf("truthful report: %+v", res)
	}
}

const agentHelperEnv = "PADDOCK_RUNNER_TEST_AGENT"

// agentHelper is the test binary run as a stand-in agent: it starts a runner with
// the handler named in $PADDOCK_RUNNER_TEST_AGENT ("path sha256"), prints the
// handler's pid, and waits to be killed.
func agentHelper() int {
	f := strings.Fields(os.Getenv(agentHelperEnv))
	r, err := runner.New(context.Background(), runner.Config{Handlers: []runner.HandlerSpec{{Name: "testhandler", Path: f[0], SHA256: f[1]}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(r.Status()[0].PID)
	select {}
}

// TestHandlerDiesWithItsAgent: an agent killed with SIGKILL (no chance to stop
// its handlers) takes its handler processes with it (parent-death signal).
func TestHandlerDiesWithItsAgent(t *testing.T) {
	b := bins["testhandler"]
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), agentHelperEnv+"="+b.Path+" "+b.SHA256)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the handler's pid from the helper agent: %v", err)
	}
	hpid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || hpid <= 0 {
		t.Fatalf("helper agent printed %q, want the handler's pid", line)
	}
	if !alive(hpid) {
		t.Fatalf("handler pid %d is not running before the agent is killed", hpid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(hpid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(hpid, syscall.SIGKILL)
			t.Fatalf("handler pid %d still running 10s after its agent was killed with SIGKILL", hpid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is a running process (not gone, not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
