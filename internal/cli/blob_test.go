package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/sched"
)

// testServer runs a real server (SQLite, fs blob store in a temp dir) in this process
// and returns its client URL and blob store.
func testServer(t *testing.T) (string, *blob.FS, *localServer) {
	t.Helper()
	dir := t.TempDir()
	fs, err := blob.OpenFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := startLocalServer(context.Background(), dir, sched.Config{Dev: true, Blobs: fs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Stop)
	return ls.URL, fs, ls
}

// randomFile writes n random bytes to a new file in dir.
func randomFile(t *testing.T, dir, name string, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func mustRun(t *testing.T, args ...string) (string, string) {
	t.Helper()
	out, errOut, code := run(t, args...)
	if code != 0 {
		t.Fatalf("paddock %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

func TestBlobPutGetLsRm(t *testing.T) {
	url, fs, _ := testServer(t)
	dir := t.TempDir()
	p1, b1 := randomFile(t, dir, "one.bin", 3<<20+17)
	p2, b2 := randomFile(t, dir, "two.bin", 0)
	d1, d2 := blob.FromBytes(b1), blob.FromBytes(b2)

	out, errOut := mustRun(t, "blob", "put", "--server", url, p1, p2)
	for _, want := range []string{string(d1) + "\t3145745\t" + p1, string(d2) + "\t0\t" + p2} {
		if !strings.Contains(out, want) {
			t.Errorf("blob put printed %q, want a line %q", out, want)
		}
	}
	if !strings.Contains(errOut, "uploaded "+p1) {
		t.Errorf("blob put stderr %q: want a plain 'uploaded' line (stderr is not a terminal)", errOut)
	}
	if info, err := fs.Stat(context.Background(), d1); err != nil || info.Size != int64(len(b1)) {
		t.Fatalf("the server's store has %v, %v for %s", info, err, d1)
	}

	// The second put finds the blob and says so.
	out, errOut = mustRun(t, "blob", "put", "--server", url, p1)
	if !strings.Contains(out, string(d1)) || !strings.Contains(errOut, "already on the server") {
		t.Errorf("second put: stdout %q stderr %q; want the digest and 'already on the server'", out, errOut)
	}
	if _, _, code := run(t, "blob", "put", "--server", url, "-q", p1); code != 0 {
		t.Errorf("put -q: exit %d", code)
	}

	out, _ = mustRun(t, "blob", "ls", "--server", url)
	if !strings.Contains(out, string(d1)) || !strings.Contains(out, string(d2)) || !strings.Contains(out, "3145745") {
		t.Errorf("blob ls: %q lacks the blobs", out)
	}
	out, _ = mustRun(t, "blob", "ls", "--server", url, "--limit", "1")
	if n := strings.Count(out, "sha256:"); n != 1 {
		t.Errorf("blob ls --limit 1 listed %d blobs:\n%s", n, out)
	}
	out, _ = mustRun(t, "blob", "ls", "--server", url, "--json")
	var listed []struct {
		Digest string `json:"digest"`
		Size   int64  `json:"size"`
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 2 {
		t.Errorf("blob ls --json = %q (%v); want a JSON array of the 2 blobs", out, err)
	}
	sizes := map[string]int64{}
	for _, b := range listed {
		sizes[b.Digest] = b.Size
	}
	if _, ok := sizes[string(d2)]; !ok || sizes[string(d1)] != 3145745 {
		t.Errorf("blob ls --json = %v; want %s (3145745 bytes) and %s", sizes, d1, d2)
	}

	got := filepath.Join(dir, "got.bin")
	mustRun(t, "blob", "get", "--server", url, string(d1), "-o", got)
	if b, _ := os.ReadFile(got); !bytes.Equal(b, b1) {
		t.Errorf("blob get -o wrote %d bytes that differ from the %d uploaded", len(b), len(b1))
	}
	out, _ = mustRun(t, "blob", "get", "--server", url, string(d1))
	if out != string(b1) {
		t.Errorf("blob get to stdout: %d bytes that differ from the %d uploaded", len(out), len(b1))
	}

	mustRun(t, "blob", "rm", "--server", url, string(d1))
	out, _ = mustRun(t, "blob", "ls", "--server", url)
	if strings.Contains(out, string(d1)) {
		t.Errorf("blob ls after rm still lists %s", d1)
	}
	_, errOut, code := run(t, "blob", "rm", "--server", url, string(d1))
	if code != 1 || !strings.Contains(errOut, "no blob "+string(d1)) {
		t.Errorf("rm of a removed blob: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = run(t, "blob", "get", "--server", url, string(d1), "-o", filepath.Join(dir, "x"))
	if code != 1 || !strings.Contains(errOut, "has no blob") || !strings.Contains(errOut, "paddock blob ls") {
		t.Errorf("get of a removed blob: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = run(t, "blob", "get", "--server", url, "sha256:abc")
	if code != 2 || !strings.Contains(errOut, "DIGEST") || !strings.Contains(errOut, "64 lowercase hex") {
		t.Errorf("get of a malformed digest: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = run(t, "blob", "put", "--server", url, filepath.Join(dir, "missing"))
	if code != 1 || !strings.Contains(errOut, "missing") {
		t.Errorf("put of a missing file: exit %d, stderr %q", code, errOut)
	}
}

func TestBlobGetResume(t *testing.T) {
	url, _, _ := testServer(t)
	dir := t.TempDir()
	p, b := randomFile(t, dir, "big.bin", 5<<20+3)
	d := blob.FromBytes(b)
	mustRun(t, "blob", "put", "--server", url, "-q", p)

	// A partial download: the first 2 MiB are there.
	part := filepath.Join(dir, "part.bin")
	if err := os.WriteFile(part, b[:2<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut := mustRun(t, "blob", "get", "--server", url, string(d), "-o", part)
	if !strings.Contains(errOut, "resuming at 2.0 MiB") {
		t.Errorf("stderr %q: want 'resuming at 2.0 MiB'", errOut)
	}
	if !strings.Contains(errOut, "downloaded "+string(d)+" 3.0 MiB") {
		t.Errorf("stderr %q: want only the rest (3.0 MiB) downloaded", errOut)
	}
	if got, _ := os.ReadFile(part); !bytes.Equal(got, b) {
		t.Fatalf("resumed file differs from the blob (%d bytes, want %d)", len(got), len(b))
	}

	// A complete file is left as it is.
	mustRun(t, "blob", "get", "--server", url, string(d), "-o", part)

	// A "partial" file of other bytes fails the check and is removed.
	bad := filepath.Join(dir, "bad.bin")
	if err := os.WriteFile(bad, []byte("not the start of that blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := run(t, "blob", "get", "--server", url, string(d), "-o", bad)
	if code != 1 || !strings.Contains(errOut, "removed") {
		t.Errorf("a wrong partial file: exit %d, stderr %q; want an error saying the file was removed", code, errOut)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("the wrong partial file is still there: %v", err)
	}
	mustRun(t, "blob", "get", "--server", url, string(d), "-o", bad) // and a new try works
}

// submitJSON submits with args and returns the stored task as JSON.
func submitJSON(t *testing.T, url string, args ...string) map[string]any {
	t.Helper()
	out, _ := mustRun(t, append([]string{"task", "submit", "--server", url, "--type", "checksum", "--json"}, args...)...)
	var task map[string]any
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatalf("task submit --json printed %q: %v", out, err)
	}
	return task
}

func specMap(task map[string]any, field string) map[string]any {
	spec, _ := task["spec"].(map[string]any)
	m, _ := spec[field].(map[string]any)
	return m
}

func TestTaskSubmitInputs(t *testing.T) {
	url, fs, _ := testServer(t)
	dir := t.TempDir()
	big, bigB := randomFile(t, dir, "big.bin", 2<<20)
	small, smallB := randomFile(t, dir, "small.txt", 100)

	// Default: the small file inline, the big one a blob uploaded first.
	task := submitJSON(t, url, "--input", "big="+big, "--input", "small="+small)
	ib := specMap(task, "inputBlobs")
	ref, _ := ib["big"].(map[string]any)
	if ref["digest"] != string(blob.FromBytes(bigB)) || ref["size"] != "2097152" {
		t.Errorf("input_blobs = %v; want big with digest %s and size 2097152", ib, blob.FromBytes(bigB))
	}
	if in := specMap(task, "inputs"); in["small"] == nil || ib["small"] != nil {
		t.Errorf("inputs = %v, input_blobs = %v: want small inline", in, ib)
	}
	if _, err := fs.Stat(context.Background(), blob.FromBytes(bigB)); err != nil {
		t.Errorf("the big input is not in the server's store: %v", err)
	}

	// Again: the upload is skipped.
	_, errOut := mustRun(t, "task", "submit", "--server", url, "--type", "checksum", "--input", "big="+big)
	if !strings.Contains(errOut, "already on the server") {
		t.Errorf("second submit stderr %q: want 'already on the server'", errOut)
	}

	// --inline-max 0: every input a blob; --inline: every input inline.
	task = submitJSON(t, url, "--inline-max", "0", "--input", "small="+small)
	if ib := specMap(task, "inputBlobs"); ib["small"] == nil {
		t.Errorf("--inline-max 0: input_blobs = %v, want small", ib)
	}
	task = submitJSON(t, url, "--inline", "--input", "big="+big, "--input", "small="+small)
	if in := specMap(task, "inputs"); in["big"] == nil || in["small"] == nil || len(specMap(task, "inputBlobs")) != 0 {
		t.Errorf("--inline: inputs %v, input_blobs %v: want both inline", len(in), specMap(task, "inputBlobs"))
	}

	// --input-blob names a blob the server has.
	mustRun(t, "blob", "put", "--server", url, "-q", small)
	task = submitJSON(t, url, "--input-blob", "s="+string(blob.FromBytes(smallB)))
	if ib := specMap(task, "inputBlobs"); ib["s"] == nil {
		t.Errorf("--input-blob: input_blobs = %v, want s", ib)
	}

	// task get shows the inputs.
	id, _ := task["id"].(string)
	out, _ := mustRun(t, "task", "get", "--server", url, id)
	if !strings.Contains(out, "input:     s  blob  100 B  "+string(blob.FromBytes(smallB))) {
		t.Errorf("task get:\n%s\nwant an input line for s", out)
	}
}

func TestTaskSubmitBadInputs(t *testing.T) {
	url, _, _ := testServer(t)
	dir := t.TempDir()
	f, _ := randomFile(t, dir, "f.bin", 10)
	missing := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
	}{
		{"no =FILE", []string{"--input", "data"}, 2, []string{"--input", "name=FILE"}},
		{"empty FILE", []string{"--input", "data="}, 2, []string{"--input", "name=FILE"}},
		{"missing file", []string{"--input", "data=" + filepath.Join(dir, "nope")}, 1, []string{"--input data=", "no such file", "name an existing file"}},
		{"directory", []string{"--input", "data=" + dir}, 1, []string{"--input data=", "not a regular file"}},
		{"bad name", []string{"--input", ".hidden=" + f}, 2, []string{"--input", "input name \".hidden\"", "not starting with '.'"}},
		{"bad name chars", []string{"--input", "a/b=" + f}, 2, []string{"--input", "letters, digits"}},
		{"duplicate name", []string{"--input", "a=" + f, "--input-blob", "a=" + missing}, 2, []string{"already given by --input"}},
		{"unknown digest", []string{"--input-blob", "a=" + missing}, 1, []string{"--input-blob a=" + missing, "no such blob", "paddock blob put FILE"}},
		{"malformed digest", []string{"--input-blob", "a=md5:00"}, 2, []string{"--input-blob", "64 lowercase hex"}},
		{"no digest", []string{"--input-blob", "a"}, 2, []string{"--input-blob", "name=DIGEST"}},
		{"bad inline-max", []string{"--inline-max", "lots", "--input", "a=" + f}, 2, []string{"--inline-max", "1MiB"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"task", "submit", "--server", url, "--type", "checksum"}, tc.args...)
			out, errOut, code := run(t, args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.wantCode, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}

// TestTaskOutputBlob runs a real paddock-agent over TCP with the testfiles handler:
// files.copy turns a blob input into a blob output, which task output downloads.
func TestTaskOutputBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs a real agent")
	}
	agentBin, handler := buildBinaries(t, "cmd/paddock-agent", "plugins/handlers/testfiles")
	url, _, ls := testServer(t)
	agentDir := t.TempDir()
	agent := exec.Command(agentBin, "--server", ls.AgentAddr, "--id", "cli-output-test", "--handler", "testfiles="+handler, "--data-dir", agentDir)
	agent.Dir = agentDir
	var agentLog bytes.Buffer
	agent.Stdout, agent.Stderr = &agentLog, &agentLog
	agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-agent.Process.Pid, syscall.SIGTERM)
		_ = agent.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", agentLog.String())
		}
	})

	dir := t.TempDir()
	big, bigB := randomFile(t, dir, "big.bin", 3<<20+5)
	small, smallB := randomFile(t, dir, "small.txt", 64)
	id, _ := mustRun(t, "task", "submit", "--server", url, "--type", "files.copy", "--input", "big="+big, "--input", "small="+small, "-q")
	out, errOut, _ := run(t, "task", "wait", "--server", url, "--timeout", "60s", "--json", strings.TrimSpace(id))
	var task struct {
		ID          string
		State       string
		OutputBlobs map[string]struct {
			Digest string
			Size   string
		}
	}
	if err := json.Unmarshal([]byte(out), &task); err != nil {
		t.Fatalf("submit --wait --json printed %q (%s): %v", out, errOut, err)
	}
	if task.State != "STATE_SUCCEEDED" || task.OutputBlobs["big"].Digest != string(blob.FromBytes(bigB)) {
		t.Fatalf("task %s ended %s with output blobs %v; want succeeded with big = %s", task.ID, task.State, task.OutputBlobs, blob.FromBytes(bigB))
	}

	// NAME → the blob, to a file and to stdout.
	got := filepath.Join(dir, "got.bin")
	mustRun(t, "task", "output", "--server", url, task.ID, "big", "-o", got)
	if b, _ := os.ReadFile(got); !bytes.Equal(b, bigB) {
		t.Errorf("task output big -o: %d bytes that differ from the %d of the input", len(b), len(bigB))
	}
	out, _ = mustRun(t, "task", "output", "--server", url, task.ID, "small")
	var code int
	if out != string(smallB) {
		t.Errorf("task output small: %q, want the input's %d bytes", out, len(smallB))
	}
	// No NAME → the main output (JSON of the sizes), and a note about the named ones.
	out, errOut = mustRun(t, "task", "output", "--server", url, task.ID)
	if !strings.Contains(out, `"big":3145733`) || !strings.Contains(errOut, "named output") {
		t.Errorf("task output ID: stdout %q stderr %q; want the main output and a note on the named outputs", out, errOut)
	}
	// task get lists the output blobs.
	out, _ = mustRun(t, "task", "get", "--server", url, task.ID)
	if !strings.Contains(out, "output:    big  blob  3.0 MiB  "+string(blob.FromBytes(bigB))) {
		t.Errorf("task get:\n%s\nwant an output line for big", out)
	}
	// An unknown name lists the real ones.
	_, errOut, code = run(t, "task", "output", "--server", url, task.ID, "nope")
	if code != 1 || !strings.Contains(errOut, "no output named \"nope\"") || !strings.Contains(errOut, "big") {
		t.Errorf("task output of an unknown name: exit %d, stderr %q", code, errOut)
	}
}
