// Command checksum is a Paddock handler computing checksums of its inputs.
//
// Task type "checksum". Every input, inline or a file of any size, is read once
// as a stream (memory stays bounded whatever the size). Payload (JSON, optional):
// {"algorithms": ["sha256","crc32"]} (the default); supported are sha256, sha512,
// sha1, crc32 (IEEE) and crc32c (Castagnoli); an empty list only reads the inputs
// and counts their bytes (benchmarks of the data path use it). Output: JSON {"inputs": {"<name>":
// {"size": n, "sha256": "<hex>", "crc32": "<8 hex digits>", ...}}}.
package main

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type payload struct {
	Algorithms []string `json:"algorithms"`
}

// Sums holds the checksums of one input.
type Sums struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	SHA512 string `json:"sha512,omitempty"`
	SHA1   string `json:"sha1,omitempty"`
	CRC32  string `json:"crc32,omitempty"`
	CRC32C string `json:"crc32c,omitempty"`
}

// algorithms are the supported hashes, and where each one's result goes.
var algorithms = map[string]struct {
	new func() hash.Hash
	set func(*Sums, string)
}{
	"sha256": {sha256.New, func(s *Sums, v string) { s.SHA256 = v }},
	"sha512": {sha512.New, func(s *Sums, v string) { s.SHA512 = v }},
	"sha1":   {sha1.New, func(s *Sums, v string) { s.SHA1 = v }},
	"crc32":  {func() hash.Hash { return crc32.NewIEEE() }, func(s *Sums, v string) { s.CRC32 = v }},
	"crc32c": {func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }, func(s *Sums, v string) { s.CRC32C = v }},
}

type checksum struct{}

var _ sdk.Handler = checksum{}

func (checksum) Describe() []sdk.TaskType {
	return []sdk.TaskType{{Name: "checksum", Version: "1.0.0", Concurrency: 4, Description: "sha256 and crc32 (or sha512, sha1, crc32c) of inputs of any size"}}
}

func (checksum) Handle(ctx context.Context, req sdk.Request) (sdk.Response, error) {
	p := payload{Algorithms: []string{"sha256", "crc32"}}
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &p); err != nil {
			return sdk.Response{}, sdk.Fatalf("checksum: payload is not JSON like {\"algorithms\":[\"sha256\",\"crc32\"]}: %v", err)
		}
	}
	for i, a := range p.Algorithms {
		if _, ok := algorithms[a]; !ok {
			return sdk.Response{}, sdk.Fatalf("checksum: payload algorithms[%d] = %q: supported are sha256, sha512, sha1, crc32, crc32c", i, a)
		}
	}
	names := req.InputNames()
	if len(names) == 0 {
		return sdk.Response{}, sdk.Fatalf("checksum: no input blobs: attach at least one input")
	}
	out := map[string]Sums{}
	for _, name := range names {
		s, err := sums(req, name, p.Algorithms)
		if err != nil {
			return sdk.Response{}, err
		}
		out[name] = s
	}
	b, err := json.Marshal(map[string]any{"inputs": out})
	if err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	return sdk.Response{Output: b}, nil
}

// sums streams one input through every asked hash at once.
func sums(req sdk.Request, name string, algos []string) (Sums, error) {
	in, err := req.Input(name)
	if err != nil {
		return Sums{}, sdk.Retryable(err)
	}
	defer in.Close()
	hs := make([]hash.Hash, len(algos))
	ws := make([]io.Writer, len(algos))
	for i, a := range algos {
		hs[i] = algorithms[a].new()
		ws[i] = hs[i]
	}
	n, err := io.CopyBuffer(io.MultiWriter(ws...), in, make([]byte, 1<<20))
	if err != nil {
		return Sums{}, sdk.Retryable(fmt.Errorf("checksum: reading input %q: %w", name, err))
	}
	s := Sums{Size: n}
	for i, a := range algos {
		algorithms[a].set(&s, hex.EncodeToString(hs[i].Sum(nil))) // crc32s: big-endian, 8 digits
	}
	return s, nil
}

func main() { sdk.Serve(checksum{}) }
