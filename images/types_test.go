package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/agent"
	itest "github.com/paddockvm/paddock/internal/testutil"
)

func typesOf(names []string, version string, conc int) []TaskType {
	var out []TaskType
	for _, n := range names {
		out = append(out, TaskType{Name: n, Version: version, Concurrency: conc})
	}
	return out
}

// TestBuildRecordsHandlerTypes builds an image with the real example handlers
// (testhandler, checksum, compress) and expects the manifest — the store's and the
// guest's copy, read with the agent's own decoder — to list, per handler, exactly the
// task types each handler's Describe returns, sorted, with versions and concurrency.
func TestBuildRecordsHandlerTypes(t *testing.T) {
	kernel, modDir := fakeKernel(t)
	spec := Spec{Kernel: kernel, ModulesDir: modDir, Agent: agentBinary(t), Handlers: []Handler{
		{Name: "testhandler", Path: goBinary(t, "github.com/paddockvm/paddock/plugins/handlers/testhandler", "")},
		{Name: "checksum", Path: goBinary(t, "github.com/paddockvm/paddock/plugins/handlers/checksum", "")},
		{Name: "compress", Path: goBinary(t, "github.com/paddockvm/paddock/plugins/handlers/compress", "")},
	}}
	img, err := mustOpen(t).Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]TaskType{
		"testhandler": typesOf([]string{"test.big", "test.crash", "test.echo", "test.fail", "test.flaky", "test.hang", "test.log", "test.logwait", "test.panic", "test.sleep"}, "1.0.0", 4),
		"checksum":    typesOf([]string{"checksum"}, "1.0.0", 4),
		"compress":    typesOf([]string{"compress.gzip", "compress.zstd", "decompress.gzip", "decompress.zstd"}, "1.0.0", 2),
	}
	if img.Manifest.Schema != SchemaVersion {
		t.Errorf("schema %d, want %d", img.Manifest.Schema, SchemaVersion)
	}
	for _, h := range img.Manifest.Handlers {
		if !reflect.DeepEqual(h.Types, want[h.Name]) {
			t.Errorf("handler %s: types %+v, want %+v", h.Name, h.Types, want[h.Name])
		}
	}
	if len(img.Manifest.Handlers) != 3 {
		t.Fatalf("manifest has %d handlers, want 3", len(img.Manifest.Handlers))
	}
	if h, ok := img.Manifest.HandlerFor("decompress.zstd"); !ok || h != "compress" {
		t.Errorf("HandlerFor(decompress.zstd) = %q, %v", h, ok)
	}
	if _, ok := img.Manifest.HandlerFor("testhandler"); ok {
		t.Errorf("HandlerFor(testhandler): a handler name is not a task type")
	}
	if got := img.Manifest.TaskTypes(); len(got) != 15 || !slices.IsSorted(got) || !slices.Contains(got, "test.sleep") {
		t.Errorf("TaskTypes = %v", got)
	}
	// The store reads back what was written.
	if again, err := mustOpenAt(t, filepath.Dir(img.Dir)).Get(img.Digest); err != nil || !reflect.DeepEqual(again.Manifest, img.Manifest) {
		t.Errorf("manifest read back from the store differs: %v", err)
	}
	// The guest's copy, decoded by the agent.
	var gm []byte
	for _, e := range readInitramfs(t, img.Initrd()) {
		if "/"+e.hdr.Name == agent.ManifestPath {
			gm = e.data
		}
	}
	p := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(p, gm, 0o644); err != nil {
		t.Fatal(err)
	}
	am, err := agent.LoadManifest(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range am.Handlers {
		var names []string
		for _, tt := range h.Types {
			names = append(names, tt.Name)
			if tt.Version != "1.0.0" || tt.Concurrency == 0 {
				t.Errorf("guest manifest %s: type %+v", h.Name, tt)
			}
		}
		var wantNames []string
		for _, tt := range want[h.Name] {
			wantNames = append(wantNames, tt.Name)
		}
		if !slices.Equal(names, wantNames) {
			t.Errorf("guest manifest handler %s types %v, want %v", h.Name, names, wantNames)
		}
	}
}

func mustOpenAt(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDigestFollowsTypes: the served task types are part of the digest. Two builds of
// the tiny handler with a different Describe give different manifests and digests; and
// the very same binary (same sha256) describing itself differently (through its
// environment) still gives a different digest, while describing itself the same way
// gives the same one.
func TestDigestFollowsTypes(t *testing.T) {
	ctx := context.Background()
	kernel, modDir := fakeKernel(t)
	base := Spec{Kernel: kernel, ModulesDir: modDir, Agent: agentBinary(t)}
	build := func(path string) Image {
		t.Helper()
		spec := base
		spec.Handlers = []Handler{{Name: "tiny", Path: path, Version: "1.0.0"}}
		img, err := mustOpen(t).Build(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	a := build(tinyHandler(t, "a.one"))
	b := build(tinyHandler(t, "b.one,b.two"))
	if got := a.Manifest.TaskTypes(); !slices.Equal(got, []string{"a.one"}) {
		t.Errorf("build a types %v, want [a.one]", got)
	}
	if got := b.Manifest.TaskTypes(); !slices.Equal(got, []string{"b.one", "b.two"}) {
		t.Errorf("build b types %v, want [b.one b.two]", got)
	}
	if a.Digest == b.Digest {
		t.Fatalf("handlers serving different types, same digest %s", a.Digest)
	}

	same := tinyHandler(t, "")
	t.Setenv("PADDOCK_TYPESHANDLER_TYPES", "x.one")
	x1, x2 := build(same), build(same)
	t.Setenv("PADDOCK_TYPESHANDLER_TYPES", "x.one,x.two")
	y := build(same)
	if x1.Manifest.Handlers[0].SHA256 != y.Manifest.Handlers[0].SHA256 {
		t.Fatalf("the same binary has two sha256s")
	}
	if x1.Digest != x2.Digest {
		t.Errorf("same binary, same types: digests %s and %s", x1.Digest, x2.Digest)
	}
	if x1.Digest == y.Digest {
		t.Errorf("same binary serving [x.one] and [x.one x.two]: same digest %s; the types are not part of it", x1.Digest)
	}
	if got := y.Manifest.TaskTypes(); !slices.Equal(got, []string{"x.one", "x.two"}) {
		t.Errorf("y types %v", got)
	}
}

// TestHandlerDescribeErrors: a handler that exits at start, a static program that is
// no plugin, and two handlers serving the same type each fail the build with
// ErrInvalid naming the file(s), and leave nothing in the store.
func TestHandlerDescribeErrors(t *testing.T) {
	kernel, modDir := fakeKernel(t)
	exits := copyWith(t, goBinary(t, "github.com/paddockvm/paddock/images/testdata/typeshandler", "-X main.exitAtStart=yes"),
		filepath.Join(t.TempDir(), "quitter"), nil, 0o755)
	twin := copyWith(t, tinyHandler(t, "dup.type,other.type"), filepath.Join(t.TempDir(), "twin"), nil, 0o755)
	first := tinyHandler(t, "dup.type")
	tests := []struct {
		name     string
		handlers func(t *testing.T) []Handler
		wantErr  []string
	}{
		{"exits at start", func(*testing.T) []Handler { return []Handler{{Name: "quitter", Path: exits}} },
			[]string{`handler "quitter"`, exits, "exiting at start, as asked", "sdk.Serve"}},
		{"not a plugin", func(t *testing.T) []Handler {
			return []Handler{{Name: "busybox", Path: itest.RequireBusybox(t)}}
		}, []string{`handler "busybox"`, "/bin/busybox"}},
		{"type served twice", func(*testing.T) []Handler {
			return []Handler{{Name: "first", Path: first}, {Name: "twin", Path: twin}}
		}, []string{`"dup.type"`, `handler "first"`, first, `handler "twin"`, twin}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{Kernel: kernel, ModulesDir: modDir, Agent: agentBinary(t), Handlers: tc.handlers(t)}
			s := mustOpen(t)
			_, err := s.Build(context.Background(), spec)
			if err == nil {
				t.Fatal("Build accepted the handler")
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if imgs, _ := s.List(); len(imgs) != 0 {
				t.Errorf("a failed build left images: %v", imgs)
			}
		})
	}
}
