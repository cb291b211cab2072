// Command compress is a Paddock handler that compresses (or decompresses)
// input blobs with gzip or zstd (github.com/klauspost/compress).
//
// Task types "compress.gzip", "compress.zstd", "decompress.gzip",
// "decompress.zstd". Payload (JSON, optional): {"level": N} — gzip 1..9 (default
// 6), zstd 1..4 (fastest, default, better, best; default 2). Every input blob
// <name> yields an output <name>.gz / <name>.zst (compressing) or <name> without
// that suffix (decompressing); with exactly one input, Output holds it as well.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type payload struct {
	Level int `json:"level"`
}

type compressor struct{}

var _ sdk.Handler = compressor{}

func (compressor) Describe() []sdk.TaskType {
	v := "1.0.0"
	return []sdk.TaskType{
		{Name: "compress.gzip", Version: v, Concurrency: 2, Description: "gzip input blobs"},
		{Name: "compress.zstd", Version: v, Concurrency: 2, Description: "zstd input blobs"},
		{Name: "decompress.gzip", Version: v, Concurrency: 2, Description: "gunzip input blobs"},
		{Name: "decompress.zstd", Version: v, Concurrency: 2, Description: "zstd-decompress input blobs"},
	}
}

func (compressor) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	var p payload
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &p); err != nil {
			return sdk.Response{}, sdk.Fatalf("%s: payload is not JSON like {\"level\": 6}: %v", req.Type, err)
		}
	}
	if len(req.Inputs) == 0 {
		return sdk.Response{}, sdk.Fatalf("%s: no input blobs: attach at least one input", req.Type)
	}
	outs := map[string][]byte{}
	var last []byte
	for name, in := range req.Inputs {
		if err := ctx.Err(); err != nil {
			return sdk.Response{}, err
		}
		var (
			out     []byte
			outName string
			err     error
		)
		switch req.Type {
		case "compress.gzip":
			out, err = gzipBytes(in, p.Level)
			outName = name + ".gz"
		case "compress.zstd":
			out, err = zstdBytes(in, p.Level)
			outName = name + ".zst"
		case "decompress.gzip":
			out, err = gunzipBytes(in)
			outName = strings.TrimSuffix(name, ".gz")
		case "decompress.zstd":
			out, err = unzstdBytes(in)
			outName = strings.TrimSuffix(name, ".zst")
		default:
			return sdk.Response{}, sdk.Fatalf("unknown type %q", req.Type)
		}
		if err != nil {
			return sdk.Response{}, sdk.Fatalf("%s: input %q: %v", req.Type, name, err)
		}
		outs[outName], last = out, out
	}
	resp := sdk.Response{Outputs: outs}
	if len(outs) == 1 {
		resp.Output = last
	}
	return resp, nil
}

func gzipBytes(in []byte, level int) ([]byte, error) {
	if level == 0 {
		level = 6
	}
	if level < 1 || level > 9 {
		return nil, fmt.Errorf("payload level %d: gzip levels are 1..9", level)
	}
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(in); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func gunzipBytes(in []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(in))
	if err != nil {
		return nil, fmt.Errorf("not gzip data: %w", err)
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("corrupt gzip data: %w", err)
	}
	return out, nil
}

func zstdBytes(in []byte, level int) ([]byte, error) {
	if level == 0 {
		level = 2
	}
	if level < 1 || level > 4 {
		return nil, fmt.Errorf("payload level %d: zstd levels are 1 (fastest) .. 4 (best)", level)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(level)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(in, nil), nil
}

func unzstdBytes(in []byte) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	out, err := dec.DecodeAll(in, nil)
	if err != nil {
		return nil, fmt.Errorf("corrupt zstd data: %w", err)
	}
	return out, nil
}

func main() { sdk.Serve(compressor{}) }
