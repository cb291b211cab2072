package sdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// funcHandler serves one type with a function, for in-process tests of the
// server's logic (the runner's tests cover the real subprocess).
type funcHandler func(context.Context, Request) (Response, error)

func (funcHandler) Describe() []TaskType { return []TaskType{{Name: "t", Version: "1"}} }
func (f funcHandler) Handle(ctx context.Context, r Request) (Response, error) {
	return f(ctx, r)
}

func handle(t *testing.T, ctx context.Context, f funcHandler, req *handlerpb.HandleRequest) *handlerpb.HandleResponse {
	t.Helper()
	s, err := newServer(f)
	if err != nil {
		t.Fatal(err)
	}
	req.Type = "t"
	resp, err := s.Handle(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func sha(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

func TestInputInlineAndFile(t *testing.T) {
	data := []byte("0123456789abcdef")
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	resp := handle(t, context.Background(), func(_ context.Context, r Request) (Response, error) {
		if got := strings.Join(r.InputNames(), ","); got != "file,inline" {
			t.Errorf("InputNames = %s", got)
		}
		for _, name := range []string{"file", "inline"} {
			in, err := r.Input(name)
			if err != nil {
				t.Fatal(err)
			}
			all, err := io.ReadAll(in)
			buf := make([]byte, 4)
			n, _ := in.ReadAt(buf, 10)
			if err != nil || !bytes.Equal(all, data) || in.Size() != 16 || string(buf[:n]) != "abcd" || in.Name() != name {
				t.Errorf("input %s: %q %v, size %d, ReadAt %q", name, all, err, in.Size(), buf[:n])
			}
			in.Close()
		}
		if _, err := r.Input("nope"); err == nil || !strings.Contains(err.Error(), `no input named "nope" (inputs: [file inline])`) {
			t.Errorf("missing input: %v", err)
		}
		return Response{}, nil
	}, &handlerpb.HandleRequest{
		Inputs:     map[string][]byte{"inline": data},
		InputFiles: map[string]*handlerpb.InputFile{"file": {Path: p, Size: 16, Digest: sha(data)}},
	})
	if resp.Error != nil {
		t.Fatal(resp.Error)
	}
	// A file whose size is not the announced one is refused.
	resp = handle(t, context.Background(), func(_ context.Context, r Request) (Response, error) {
		_, err := r.Input("file")
		return Response{}, err
	}, &handlerpb.HandleRequest{InputFiles: map[string]*handlerpb.InputFile{"file": {Path: p, Size: 17}}})
	if resp.Error == nil || !strings.Contains(resp.Error.Message, "has 16 bytes, the agent announced 17") {
		t.Errorf("size mismatch: %v", resp.Error)
	}
}

func TestReadsAndWritesStopWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	resp := handle(t, ctx, func(_ context.Context, r Request) (Response, error) {
		in, _ := r.Input("a")
		w, err := r.CreateOutput("o")
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := in.Read(make([]byte, 1)); !errors.Is(err, context.Canceled) {
			t.Errorf("read after cancel: %v", err)
		}
		if _, err := w.Write([]byte("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("write after cancel: %v", err)
		}
		return Response{}, ctx.Err()
	}, &handlerpb.HandleRequest{Inputs: map[string][]byte{"a": []byte("abc")}, OutputDir: t.TempDir()})
	if resp.Error == nil || !resp.Error.Retryable {
		t.Fatalf("cancelled call: %+v, want a retryable error", resp.Error)
	}
}

func TestOutputFiles(t *testing.T) {
	dir := t.TempDir()
	resp := handle(t, context.Background(), func(_ context.Context, r Request) (Response, error) {
		w, err := r.CreateOutput("w.txt")
		if err != nil {
			return Response{}, err
		}
		io.WriteString(w, "written ")
		io.WriteString(w, "through the writer")
		// Not closed: the SDK closes it.
		if _, err := r.CreateOutput("w.txt"); err == nil {
			t.Error("CreateOutput twice: no error")
		}
		return Response{Output: []byte("ok")}, os.WriteFile(filepath.Join(r.OutputDir, "hand.txt"), []byte("by hand"), 0o644)
	}, &handlerpb.HandleRequest{OutputDir: dir, MaxOutputBytes: 100})
	if resp.Error != nil {
		t.Fatal(resp.Error)
	}
	want := map[string]*handlerpb.OutputFile{
		"w.txt":    {Size: 26, Digest: sha([]byte("written through the writer"))},
		"hand.txt": {Size: 7, Digest: sha([]byte("by hand"))},
	}
	if len(resp.OutputFiles) != 2 {
		t.Fatalf("OutputFiles = %v", resp.OutputFiles)
	}
	for n, f := range want {
		if g := resp.OutputFiles[n]; g.GetSize() != f.Size || g.GetDigest() != f.Digest {
			t.Errorf("%s: %v, want %v", n, g, f)
		}
	}
	// The limit counts inline output and files together: 2 + 26 + 7 = 35 > 34.
	resp = handle(t, context.Background(), func(_ context.Context, r Request) (Response, error) {
		return Response{Output: []byte("ok")}, os.WriteFile(filepath.Join(r.OutputDir, "hand.txt"), make([]byte, 33), 0o644)
	}, &handlerpb.HandleRequest{OutputDir: t.TempDir(), MaxOutputBytes: 34})
	if resp.Error.GetKind() != handlerpb.ErrorKind_ERROR_KIND_OUTPUT_TOO_LARGE || !strings.Contains(resp.Error.GetMessage(), "output of 35 bytes exceeds the agent's limit of 34 bytes") {
		t.Errorf("over the limit: %v", resp.Error)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"a": true, "data.csv.zst": true, "-x_1": true, strings.Repeat("n", 128): true,
		"": false, ".hidden": false, "../x": false, "a/b": false, "a b": false, "é": false, strings.Repeat("n", 129): false,
	} {
		if ValidName(name) != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, !want, want)
		}
	}
}
