// Command testfiles is a handler for Paddock's data-plane tests, not for users:
// inputs read as files, outputs written as files.
//
//	files.copy   copies every input (inline or file) to an output of the same name:
//	             a file in OutputDir when there is one, else inline in Outputs;
//	             Output is JSON {"<name>": size}
//	files.write  payload JSON {"writer": {"<name>": size}, "hand": {"<name>": size},
//	             "inline": {"<name>": "text"}}: writes each "writer" output through
//	             CreateOutput and each "hand" output with os.WriteFile straight into
//	             OutputDir (byte i of an output is i%251), and returns "inline" in
//	             Outputs; a CreateOutput or write error fails the task (fatal)
//
// With PADDOCK_TESTFILES_LIE=1 in its environment it serves, without the SDK, a
// single type that reports output files the way a broken handler might:
//
//	files.lie    payload JSON {"write": {"<name>": size}, "report": {"<name>":
//	             {"size": n, "digest": "sha256:..."}}}: writes the "write" files into
//	             OutputDir and returns "report" verbatim as output_files
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type testFiles struct{}

var _ sdk.Handler = testFiles{}

func (testFiles) Describe() []sdk.TaskType {
	return []sdk.TaskType{
		{Name: "files.copy", Version: "1.0.0", Concurrency: 4, Description: "test-only: copy inputs to outputs"},
		{Name: "files.write", Version: "1.0.0", Concurrency: 4, Description: "test-only: write outputs as asked"},
	}
}

func (testFiles) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	switch req.Type {
	case "files.copy":
		return copyInputs(req)
	case "files.write":
		var p struct {
			Writer map[string]int64  `json:"writer"`
			Hand   map[string]int64  `json:"hand"`
			Inline map[string]string `json:"inline"`
		}
		if err := json.Unmarshal(req.Payload, &p); err != nil {
			return sdk.Response{}, sdk.Fatalf("files.write: payload: %v", err)
		}
		for name, n := range p.Writer {
			w, err := req.CreateOutput(name)
			if err != nil {
				return sdk.Response{}, sdk.Fatal(err)
			}
			if _, err := io.Copy(w, io.LimitReader(&pattern{}, n)); err != nil {
				return sdk.Response{}, sdk.Fatal(err)
			}
			if err := w.Close(); err != nil {
				return sdk.Response{}, sdk.Fatal(err)
			}
		}
		for name, n := range p.Hand {
			f, err := os.Create(filepath.Join(req.OutputDir, name))
			if err != nil {
				return sdk.Response{}, sdk.Fatal(err)
			}
			_, err = io.Copy(f, io.LimitReader(&pattern{}, n))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return sdk.Response{}, sdk.Fatal(err)
			}
		}
		resp := sdk.Response{Outputs: map[string][]byte{}}
		for name, s := range p.Inline {
			resp.Outputs[name] = []byte(s)
		}
		return resp, nil
	}
	return sdk.Response{}, sdk.Fatalf("unknown type %q", req.Type)
}

func copyInputs(req sdk.Request) (sdk.Response, error) {
	sizes := map[string]int64{}
	resp := sdk.Response{Outputs: map[string][]byte{}}
	for _, name := range req.InputNames() {
		in, err := req.Input(name)
		if err != nil {
			return sdk.Response{}, sdk.Fatal(err)
		}
		var w io.WriteCloser
		if req.OutputDir != "" {
			if w, err = req.CreateOutput(name); err != nil {
				in.Close()
				return sdk.Response{}, sdk.Fatal(err)
			}
		} else {
			w = &inlineOutput{resp: resp, name: name}
		}
		n, err := io.Copy(w, in)
		in.Close()
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return sdk.Response{}, fmt.Errorf("copying input %q: %w", name, err)
		}
		sizes[name] = n
	}
	resp.Output, _ = json.Marshal(sizes)
	return resp, nil
}

// inlineOutput collects an output in memory, into resp.Outputs on Close.
type inlineOutput struct {
	resp sdk.Response
	name string
	b    []byte
}

func (o *inlineOutput) Write(p []byte) (int, error) { o.b = append(o.b, p...); return len(p), nil }
func (o *inlineOutput) Close() error                { o.resp.Outputs[o.name] = o.b; return nil }

// pattern reads as 0, 1, ..., 250, 0, 1, ...: byte i is i%251.
type pattern struct{ off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(len(b))
	return len(b), nil
}

func main() {
	if os.Getenv("PADDOCK_TESTFILES_LIE") == "1" {
		serveLiar()
		return
	}
	sdk.Serve(testFiles{})
}
