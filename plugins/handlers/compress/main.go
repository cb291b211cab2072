// Command compress is a Paddock handler that compresses (or decompresses) its
// inputs with gzip or zstd (github.com/klauspost/compress), streaming: memory
// stays bounded whatever the size.
//
// Task types "compress.gzip", "compress.zstd", "decompress.gzip",
// "decompress.zstd". Payload (JSON, optional): {"level": N} — gzip 1..9 (default
// 6), zstd 1..4 (fastest, default, better, best; default 2). Every input <name>,
// inline or a file, yields an output <name>.gz / <name>.zst (compressing) or
// <name> without that suffix (decompressing).
//
// When the agent offers an output directory, each output is written there as a
// file (any size) and Output is JSON {"<output name>": size}. Otherwise outputs
// come back inline in Outputs, bounded by the task's output limit, and with
// exactly one input Output holds it as well. Decompressing what compress wrote
// gives back the exact bytes.
package main

import (
	"context"
	"encoding/json"
	"errors"
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

// zstdMaxWindow bounds the decoder's memory: enough for `zstd --long=27`.
const zstdMaxWindow = 128 << 20

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

// codec is one task type: the output's name and the streaming transform.
type codec struct {
	outName func(in string) string
	run     func(dst io.Writer, src io.Reader, level int) error
}

var codecs = map[string]codec{
	"compress.gzip":   {func(n string) string { return n + ".gz" }, gzipStream},
	"compress.zstd":   {func(n string) string { return n + ".zst" }, zstdStream},
	"decompress.gzip": {func(n string) string { return strings.TrimSuffix(n, ".gz") }, gunzipStream},
	"decompress.zstd": {func(n string) string { return strings.TrimSuffix(n, ".zst") }, unzstdStream},
}

func (compressor) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	var p payload
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &p); err != nil {
			return sdk.Response{}, sdk.Fatalf("%s: payload is not JSON like {\"level\": 6}: %v", req.Type, err)
		}
	}
	c, ok := codecs[req.Type]
	if !ok {
		return sdk.Response{}, sdk.Fatalf("unknown type %q", req.Type)
	}
	switch {
	case strings.HasSuffix(req.Type, ".gzip") && (p.Level < 0 || p.Level > 9):
		return sdk.Response{}, sdk.Fatalf("%s: payload level %d: gzip levels are 1..9", req.Type, p.Level)
	case strings.HasSuffix(req.Type, ".zstd") && (p.Level < 0 || p.Level > 4):
		return sdk.Response{}, sdk.Fatalf("%s: payload level %d: zstd levels are 1 (fastest) .. 4 (best)", req.Type, p.Level)
	}
	names := req.InputNames()
	if len(names) == 0 {
		return sdk.Response{}, sdk.Fatalf("%s: no input blobs: attach at least one input", req.Type)
	}
	resp := sdk.Response{Outputs: map[string][]byte{}}
	sizes := map[string]int64{}
	for _, name := range names {
		out := c.outName(name)
		n, err := convert(ctx, req, c, name, out, p.Level, resp.Outputs)
		if err != nil {
			return sdk.Response{}, err
		}
		sizes[out] = n
	}
	switch {
	case req.OutputDir != "":
		resp.Output, _ = json.Marshal(sizes)
	case len(resp.Outputs) == 1:
		for _, b := range resp.Outputs {
			resp.Output = b
		}
	}
	return resp, nil
}

// convert streams one input through the codec into the output out: a file when
// there is an output directory, else inline (into inline).
func convert(ctx context.Context, req sdk.Request, c codec, name, out string, level int, inline map[string][]byte) (int64, error) {
	in, err := req.Input(name)
	if err != nil {
		return 0, sdk.Retryable(err)
	}
	defer in.Close()
	src := &tagReader{r: in}
	var dst *tagWriter
	if req.OutputDir != "" {
		w, err := req.CreateOutput(out)
		if err != nil {
			return 0, sdk.Fatalf("%s: input %q: %v", req.Type, name, err)
		}
		defer w.Close()
		dst = &tagWriter{w: w}
	} else {
		limit := int64(sdk.MaxMessageBytes)
		if req.MaxOutputBytes > 0 {
			limit = min(limit, req.MaxOutputBytes)
		}
		dst = &tagWriter{w: &memWriter{limit: limit}}
	}
	err = c.run(dst, src, level)
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case src.err != nil:
		return 0, sdk.Retryable(fmt.Errorf("%s: reading input %q: %w", req.Type, name, src.err))
	case dst.err != nil:
		if errors.Is(dst.err, sdk.ErrOutputTooLarge) {
			return 0, fmt.Errorf("%s: output %q: %w", req.Type, out, dst.err)
		}
		return 0, sdk.Retryable(fmt.Errorf("%s: writing output %q: %w", req.Type, out, dst.err))
	case err != nil:
		return 0, sdk.Fatalf("%s: input %q: %v", req.Type, name, err)
	}
	if w, ok := dst.w.(*sdk.OutputWriter); ok {
		if err := w.Close(); err != nil {
			return 0, sdk.Retryable(err)
		}
	} else {
		inline[out] = dst.w.(*memWriter).b
	}
	return dst.n, nil
}

// tagReader remembers its reader's error, so a failed copy can tell a read error
// from corrupt data.
type tagReader struct {
	r   io.Reader
	err error
}

func (t *tagReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// tagWriter remembers its writer's error and counts what was written.
type tagWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (t *tagWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	t.n += int64(n)
	if err != nil {
		t.err = err
	}
	return n, err
}

// memWriter collects an inline output, up to limit bytes.
type memWriter struct {
	b     []byte
	limit int64
}

func (m *memWriter) Write(p []byte) (int, error) {
	if int64(len(m.b)+len(p)) > m.limit {
		return 0, fmt.Errorf("%w: inline output would pass %d bytes (give the task an output directory for large outputs)", sdk.ErrOutputTooLarge, m.limit)
	}
	m.b = append(m.b, p...)
	return len(p), nil
}

func gzipStream(dst io.Writer, src io.Reader, level int) error {
	if level == 0 {
		level = 6
	}
	w, err := gzip.NewWriterLevel(dst, level)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, src); err != nil {
		return err
	}
	return w.Close()
}

func gunzipStream(dst io.Writer, src io.Reader, _ int) error {
	r, err := gzip.NewReader(src)
	if err != nil {
		return fmt.Errorf("not gzip data: %w", err)
	}
	defer r.Close()
	if _, err := io.Copy(dst, r); err != nil {
		return fmt.Errorf("corrupt gzip data: %w", err)
	}
	return nil
}

func zstdStream(dst io.Writer, src io.Reader, level int) error {
	if level == 0 {
		level = 2
	}
	enc, err := zstd.NewWriter(dst, zstd.WithEncoderLevel(zstd.EncoderLevel(level)), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	if _, err := io.Copy(enc, src); err != nil {
		enc.Close()
		return err
	}
	return enc.Close()
}

func unzstdStream(dst io.Writer, src io.Reader, _ int) error {
	dec, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(zstdMaxWindow))
	if err != nil {
		return err
	}
	defer dec.Close()
	if _, err := io.Copy(dst, dec); err != nil {
		return fmt.Errorf("corrupt zstd data: %w", err)
	}
	return nil
}

func main() { sdk.Serve(compressor{}) }
