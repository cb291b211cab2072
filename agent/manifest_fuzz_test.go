package agent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/images"
)

// FuzzLoadManifest reads fuzzed bytes as the guest's image manifest. LoadManifest must
// return an error, not panic; what it accepts must survive its own JSON round trip;
// and whatever images decodes as a manifest, the agent must decode too, with the same
// kernel version, modules (in order), handlers (with their task types) and agent —
// the agent's Manifest is a view of what images writes.
//
//	go test -run '^$' -fuzz '^FuzzLoadManifest$' -fuzztime 10m ./agent
func FuzzLoadManifest(f *testing.F) {
	const sum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	good, _ := json.Marshal(images.Manifest{Schema: images.SchemaVersion, KernelVersion: "6.1.0",
		Agent:    images.Binary{Name: "agent", Path: "/init", SHA256: sum},
		Modules:  []images.Module{{Name: "virtio_console", Path: "/lib/modules/virtio_console.ko", SHA256: sum}, {Name: "9p", Path: "/lib/modules/9p.ko"}},
		Handlers: []images.Binary{{Name: "echo", Path: "/usr/lib/paddock/handlers/echo", Version: "1.0", SHA256: sum, Types: []images.TaskType{{Name: "echo", Version: "1", Concurrency: 4}}}},
		Config:   images.File{Path: "/etc/paddock/agent.yaml"}})
	f.Add(good)
	f.Add([]byte(`{"kernel_version":"6.1","modules":[{"name":"a"},{"name":"a"}],"handlers":null}`))
	f.Add([]byte(`{"Kernel_Version":"x","kernel_version":"y","modules":{}}`))
	f.Add([]byte(`{"handlers":[{"types":[{"concurrency":1e3}]}]}`))
	f.Add([]byte(`{"handlers":[{"size":-1,"types":[{"concurrency":"4"}]}]}`))
	f.Add([]byte("\ufeff{}"))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "manifest.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := agent.LoadManifest(path)
		var im images.Manifest
		imErr := json.Unmarshal(data, &im)
		if imErr == nil && err != nil {
			t.Fatalf("images decodes this manifest, the agent refuses it: %v", err)
		}
		if err != nil {
			return
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("an accepted manifest does not encode: %v", err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		back, err := agent.LoadManifest(path)
		if err != nil || !reflect.DeepEqual(normal(back), normal(m)) {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, m)
		}
		if imErr != nil {
			return
		}
		if got, want := normal(m), fromImages(im); !reflect.DeepEqual(got, want) {
			t.Fatalf("the agent reads\n%+v\nwhere images reads\n%+v", got, want)
		}
	})
}

// normal is m with empty slices as nil (JSON's [] and null, and omitempty, do not
// keep the difference).
func normal(m agent.Manifest) agent.Manifest {
	if len(m.Modules) == 0 {
		m.Modules = nil
	}
	if len(m.Handlers) == 0 {
		m.Handlers = nil
	}
	for i := range m.Handlers {
		m.Handlers[i] = normalFile(m.Handlers[i])
	}
	m.Agent = normalFile(m.Agent)
	return m
}

func normalFile(f agent.ManifestFile) agent.ManifestFile {
	if len(f.Types) == 0 {
		f.Types = nil
	}
	return f
}

// fromImages is the agent's view of an images manifest.
func fromImages(im images.Manifest) agent.Manifest {
	bin := func(b images.Binary) agent.ManifestFile {
		f := agent.ManifestFile{Name: b.Name, Path: b.Path, Version: b.Version, SHA256: b.SHA256}
		for _, t := range b.Types {
			f.Types = append(f.Types, agent.ManifestType{Name: t.Name, Version: t.Version, Concurrency: t.Concurrency})
		}
		return f
	}
	m := agent.Manifest{KernelVersion: im.KernelVersion, Agent: bin(im.Agent)}
	for _, mod := range im.Modules {
		m.Modules = append(m.Modules, agent.ManifestModule{Name: mod.Name, Path: mod.Path, SHA256: mod.SHA256})
	}
	for _, h := range im.Handlers {
		m.Handlers = append(m.Handlers, bin(h))
	}
	return normal(m)
}
