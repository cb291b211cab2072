// Command checksum is a Paddock handler computing checksums of input blobs.
//
// Task type "checksum". Payload (JSON, optional): {"algorithms": ["sha256","crc32"]}
// (default both). Output: JSON {"inputs": {"<name>": {"size": n, "sha256": "<hex>",
// "crc32": "<8 hex digits, IEEE>"}}}.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"

	"github.com/paddockvm/paddock/plugins/sdk"
)

type payload struct {
	Algorithms []string `json:"algorithms"`
}

// Sums holds the checksums of one blob.
type Sums struct {
	Size   int    `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	CRC32  string `json:"crc32,omitempty"`
}

type checksum struct{}

var _ sdk.Handler = checksum{}

func (checksum) Describe() []sdk.TaskType {
	return []sdk.TaskType{{Name: "checksum", Version: "1.0.0", Concurrency: 4, Description: "sha256 and crc32 of input blobs"}}
}

func (checksum) Handle(_ context.Context, req sdk.Request) (sdk.Response, error) {
	p := payload{Algorithms: []string{"sha256", "crc32"}}
	if len(req.Payload) > 0 {
		if err := json.Unmarshal(req.Payload, &p); err != nil {
			return sdk.Response{}, sdk.Fatalf("checksum: payload is not JSON like {\"algorithms\":[\"sha256\",\"crc32\"]}: %v", err)
		}
	}
	for i, a := range p.Algorithms {
		if a != "sha256" && a != "crc32" {
			return sdk.Response{}, sdk.Fatalf("checksum: payload algorithms[%d] = %q: supported are \"sha256\" and \"crc32\"", i, a)
		}
	}
	if len(req.Inputs) == 0 {
		return sdk.Response{}, sdk.Fatalf("checksum: no input blobs: attach at least one input")
	}
	out := map[string]Sums{}
	for name, b := range req.Inputs {
		s := Sums{Size: len(b)}
		for _, a := range p.Algorithms {
			switch a {
			case "sha256":
				h := sha256.Sum256(b)
				s.SHA256 = hex.EncodeToString(h[:])
			case "crc32":
				s.CRC32 = fmt.Sprintf("%08x", crc32.ChecksumIEEE(b))
			}
		}
		out[name] = s
	}
	b, err := json.Marshal(map[string]any{"inputs": out})
	if err != nil {
		return sdk.Response{}, sdk.Fatal(err)
	}
	return sdk.Response{Output: b}, nil
}

func main() { sdk.Serve(checksum{}) }
