package images

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzStoreManifest puts fuzzed bytes in a store as an image's manifest.json and reads
// them back with Get and List. Decoding must fail with an error, never panic; an
// accepted image is the one its directory names (its manifest carries that digest), the
// same whether asked for by full digest, by prefix or listed; and any manifest that
// decodes, stored under its own ComputeDigest, loads back with that digest unchanged
// (the digest survives the JSON round trip through the store).
//
//	go test -run '^$' -fuzz '^FuzzStoreManifest$' -fuzztime 10m ./images
func FuzzStoreManifest(f *testing.F) {
	const d = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good, _ := json.Marshal(Manifest{Schema: SchemaVersion, Digest: d, KernelVersion: "6.1.0",
		Kernel: &File{Path: KernelFile, Size: 10, SHA256: d}, Agent: Binary{Name: "agent", Path: "/init", Size: 3, SHA256: d},
		Modules:  []Module{{Name: "virtio_console", Path: "/lib/modules/virtio_console.ko", Size: 1, SHA256: d}},
		Handlers: []Binary{{Name: "echo", Path: "/usr/lib/paddock/handlers/echo", Types: []TaskType{{Name: "echo", Version: "1", Concurrency: 4}}}},
		Config:   File{Path: "/etc/paddock/agent.yaml"}})
	f.Add(good)
	f.Add([]byte(`{"digest":"` + d + `","schema":1}`))
	f.Add([]byte(`{"digest":"` + d + `","modules":null,"handlers":[{"types":[]}],"kernel":null}`))
	f.Add([]byte(`{"digest":"` + d + `","DIGEST":"x"}`))
	f.Add([]byte(`{"digest":"0123"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"digest":"` + d + `","kernel":{"size":1e400}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(s.Dir(), d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(), d, ManifestFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := s.Get(d)
		byPrefix, perr := s.Get(d[:6])
		list, lerr := s.List()
		if (err == nil) != (perr == nil) || (err == nil) != (lerr == nil) {
			t.Fatalf("Get by digest: %v; by prefix: %v; List: %v", err, perr, lerr)
		}
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				t.Fatalf("a present manifest reads as not found: %v", err)
			}
		} else {
			if !json.Valid(data) {
				t.Fatalf("accepted a manifest that is not JSON")
			}
			if img.Digest != d || img.Manifest.Digest != d || img.Dir != filepath.Join(s.Dir(), d) {
				t.Fatalf("image %s in %s names digest %q", img.Digest, img.Dir, img.Manifest.Digest)
			}
			if byPrefix.Digest != d || len(list) != 1 || list[0].Digest != d {
				t.Fatalf("by prefix %s, listed %v", byPrefix.Digest, list)
			}
		}

		var m Manifest
		if json.Unmarshal(data, &m) != nil {
			return
		}
		own, err := m.ComputeDigest()
		if err != nil {
			t.Fatalf("a decoded manifest has no digest: %v", err)
		}
		m.Digest = own
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("a decoded manifest does not encode: %v", err)
		}
		if err := os.MkdirAll(filepath.Join(s.Dir(), own), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(), own, ManifestFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		back, err := s.Get(own)
		if err != nil {
			t.Fatalf("a manifest stored under its own digest does not load: %v\n%s", err, b)
		}
		if again, err := back.Manifest.ComputeDigest(); err != nil || again != own {
			t.Fatalf("digest %s after the store's round trip, %s before (%v)\n%s", again, own, err, b)
		}
	})
}
