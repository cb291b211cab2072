package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/paddockvm/paddock/agent"
)

func unitSpec(t *testing.T) Spec {
	kernel, modDir := fakeKernel(t)
	ag := agentBinary(t)
	h := copyWith(t, tinyHandler(t, ""), filepath.Join(t.TempDir(), "echo"), []byte("handler-echo"), 0o755)
	return Spec{
		Kernel: kernel, ModulesDir: modDir, Agent: ag, Modules: []string{"extra"},
		Handlers:    []Handler{{Name: "echo", Path: h, Version: "1.2.3"}},
		AgentConfig: json.RawMessage(`{"port": "org.paddock.agent.0", "labels": {"a": "b"}}`),
	}
}

func mustOpen(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBuildReproducible builds the same spec into two stores (no cache shared) and
// expects the same digest and byte-identical files; then a changed handler (content,
// or only its version) must change the digest.
func TestBuildReproducible(t *testing.T) {
	ctx := context.Background()
	spec := unitSpec(t)
	a, err := mustOpen(t).Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := mustOpen(t).Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest {
		t.Fatalf("same inputs, digests differ: %s vs %s", a.Digest, b.Digest)
	}
	for _, f := range []string{InitramfsFile, KernelFile, ManifestFile} {
		if !bytes.Equal(readAll(t, filepath.Join(a.Dir, f)), readAll(t, filepath.Join(b.Dir, f))) {
			t.Errorf("%s differs between two builds of the same inputs", f)
		}
	}
	if got, _ := a.Manifest.ComputeDigest(); got != a.Digest || filepath.Base(a.Dir) != a.Digest {
		t.Errorf("digest %s, recomputed %s, dir %s: not content-addressed", a.Digest, got, a.Dir)
	}
	if sum, _, _ := hashFile(a.Initrd()); sum != a.Manifest.Initramfs.SHA256 {
		t.Errorf("manifest initramfs sha256 %s, file has %s", a.Manifest.Initramfs.SHA256, sum)
	}

	changed := spec
	changed.Handlers = []Handler{{Name: "echo", Path: copyWith(t, spec.Handlers[0].Path, filepath.Join(t.TempDir(), "echo"), []byte("!"), 0o755), Version: "1.2.3"}}
	c, err := mustOpen(t).Build(ctx, changed)
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == a.Digest {
		t.Fatalf("changing the handler's content kept digest %s", a.Digest)
	}
	if c.Manifest.Handlers[0].SHA256 == a.Manifest.Handlers[0].SHA256 {
		t.Fatalf("changed handler has the same sha256 in the manifest")
	}
	bumped := spec
	bumped.Handlers = []Handler{{Name: "echo", Path: spec.Handlers[0].Path, Version: "1.2.4"}}
	d, err := mustOpen(t).Build(ctx, bumped)
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest == a.Digest {
		t.Fatalf("changing the handler's version kept digest %s", a.Digest)
	}
}

// TestBuildCache: an unchanged build is a cache hit that does no work (no build, only
// the check and cached events); touching an input rebuilds.
func TestBuildCache(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	spec := unitSpec(t)
	first, err := s.Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if first.Cached || s.builds.Load() != 1 {
		t.Fatalf("first build: cached=%v builds=%d", first.Cached, s.builds.Load())
	}
	var steps []string
	again, err := s.Build(ctx, spec, WithProgress(func(e Event) { steps = append(steps, e.Step) }))
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached || again.Digest != first.Digest || s.builds.Load() != 1 {
		t.Fatalf("second build: cached=%v digest=%s builds=%d, want a cache hit of %s", again.Cached, again.Digest, s.builds.Load(), first.Digest)
	}
	if strings.Join(steps, ",") != "check,cached" {
		t.Fatalf("cache hit did work: steps %v", steps)
	}
	// Rewrite the handler with the same bytes: its change time moves, so the build runs
	// again and, being reproducible, lands on the same digest.
	copyWith(t, spec.Handlers[0].Path, spec.Handlers[0].Path+".new", nil, 0o755)
	if err := os.Rename(spec.Handlers[0].Path+".new", spec.Handlers[0].Path); err != nil {
		t.Fatal(err)
	}
	third, err := s.Build(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if third.Cached || s.builds.Load() != 2 || third.Digest != first.Digest {
		t.Fatalf("after touching an input: cached=%v builds=%d digest=%s (want a rebuild to %s)", third.Cached, s.builds.Load(), third.Digest, first.Digest)
	}
	// A removed image is rebuilt, not served from a stale key.
	if _, err := s.Remove(first.Digest[:8]); err != nil {
		t.Fatal(err)
	}
	fourth, err := s.Build(ctx, spec)
	if err != nil || fourth.Cached {
		t.Fatalf("build after rm: cached=%v err=%v", fourth.Cached, err)
	}
}

// TestConcurrentBuilds runs several builds of the same spec into one store at once.
func TestConcurrentBuilds(t *testing.T) {
	s := mustOpen(t)
	spec := unitSpec(t)
	const n = 4
	digests := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := s.Build(context.Background(), spec)
			digests[i], errs[i] = img.Digest, err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("build %d: digest %s err %v (build 0: %s)", i, digests[i], errs[i], digests[0])
		}
	}
	imgs, err := s.List()
	if err != nil || len(imgs) != 1 {
		t.Fatalf("store lists %d images (%v), want 1", len(imgs), err)
	}
	if left, _ := os.ReadDir(filepath.Join(s.Dir(), ".tmp")); len(left) != 0 {
		t.Fatalf("temporary build directories left: %v", left)
	}
	if sum, _, _ := hashFile(imgs[0].Initrd()); sum != imgs[0].Manifest.Initramfs.SHA256 {
		t.Fatalf("initramfs corrupted by concurrent builds")
	}
}

// TestInitramfsContents reads the archive back: fixed metadata, sorted entries, the
// agent as /init, modules decompressed and in load order, and a guest manifest that
// the agent's own decoder reads.
func TestInitramfsContents(t *testing.T) {
	spec := unitSpec(t)
	img, err := mustOpen(t).Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	ents := readInitramfs(t, img.Initrd())
	files := map[string][]byte{}
	var names []string
	for _, e := range ents {
		if e.hdr.ModTime.Unix() != 0 || e.hdr.Uid != 0 || e.hdr.Guid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d, want 0", e.hdr.Name, e.hdr.ModTime, e.hdr.Uid, e.hdr.Guid)
		}
		names = append(names, e.hdr.Name)
		files["/"+e.hdr.Name] = e.data
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("entries not sorted: %v", names)
	}
	if !bytes.Equal(files["/init"], readAll(t, spec.Agent)) {
		t.Errorf("/init is not the agent")
	}
	// Handlers are on the handler disk, not in the initramfs.
	for name := range files {
		if strings.HasPrefix(name, GuestHandlersDir+"/") {
			t.Errorf("%s is in the initramfs; handlers belong on the handler disk", name)
		}
	}
	if hd := img.Manifest.HandlerDisk; hd == nil {
		t.Errorf("manifest has no handler disk")
	} else {
		if sum, n, _ := hashFile(img.HandlerDiskPath()); sum != hd.SHA256 || n != hd.Size {
			t.Errorf("handler disk: %d bytes sha256 %s, manifest says %d %s", n, sum, hd.Size, hd.SHA256)
		}
		out := filepath.Join(t.TempDir(), "x")
		if b, err := exec.Command("fsck.erofs", "--extract="+out, img.HandlerDiskPath()).CombinedOutput(); err != nil {
			t.Fatalf("fsck.erofs --extract: %v: %s", err, b)
		}
		fi, err := os.Stat(filepath.Join(out, "echo"))
		if err != nil || fi.Mode().Perm() != 0o755 || !bytes.Equal(readAll(t, filepath.Join(out, "echo")), readAll(t, spec.Handlers[0].Path)) {
			t.Errorf("handler disk: echo is not the handler, mode 0755 (%v, %v)", fi, err)
		}
		if err := img.CheckHandlerDisk(); err != nil {
			t.Errorf("CheckHandlerDisk: %v", err)
		}
	}
	if got := string(files["/lib/modules/9.9.9-test/kernel/drivers/char/virtio_console.ko"]); got != "console-plain" {
		t.Errorf("virtio_console.ko (from .ko.gz) = %q, want decompressed", got)
	}
	if got := string(files["/lib/modules/9.9.9-test/kernel/drivers/block/virtio_blk.ko"]); got != "blk-plain" {
		t.Errorf("virtio_blk.ko (from .ko.zst) = %q, want decompressed", got)
	}
	if got := string(files["/lib/modules/9.9.9-test/kernel/fs/extra.ko"]); got != "extra-plain" {
		t.Errorf("extra.ko (from .ko.xz) = %q, want decompressed", got)
	}
	if _, err := agent.ParseConfig(files[agent.ConfigPath]); err != nil {
		t.Errorf("agent config in the image: %v", err)
	}
	gm := filepath.Join(t.TempDir(), "manifest.json")
	os.WriteFile(gm, files[agent.ManifestPath], 0o644)
	m, err := agent.LoadManifest(gm)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, mod := range m.Modules {
		order = append(order, mod.Name)
		if _, ok := files[mod.Path]; !ok {
			t.Errorf("manifest module %s at %s is not in the initramfs", mod.Name, mod.Path)
		}
	}
	want := "virtio_ring,virtio,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio_pci,virtio_console,virtio_blk,extra"
	if strings.Join(order, ",") != want {
		t.Errorf("guest manifest module order %v, want %s", order, want)
	}
	if len(m.Handlers) != 1 || m.Handlers[0].Name != "echo" || m.Handlers[0].Version != "1.2.3" || m.Handlers[0].SHA256 != sha(readAll(t, spec.Handlers[0].Path)) {
		t.Errorf("guest manifest handlers = %+v", m.Handlers)
	} else if h := m.Handlers[0]; h.Path != "/usr/lib/paddock/handlers/echo" || h.Packed != "" {
		t.Errorf("guest manifest handler echo: path %q packed %q, want the path on the handler disk and nothing packed", h.Path, h.Packed)
	} else if d := m.HandlerDisk; d == nil || *d != (agent.ManifestDisk{Serial: HandlerDiskSerial, FSType: "erofs", Mount: GuestHandlersDir}) {
		t.Errorf("guest manifest handler disk = %+v", d)
	} else if ty := m.Handlers[0].Types; len(ty) != 2 || ty[0] != (agent.ManifestType{Name: "tiny.one", Version: "1.0.0", Concurrency: 2}) || ty[1].Name != "tiny.two" {
		t.Errorf("guest manifest handler echo types = %+v, want tiny.one and tiny.two as the handler describes them", ty)
	}
	if m.Agent.Path != "/init" || m.Agent.Version != testAgentVersion {
		t.Errorf("guest manifest agent = %+v, want /init with a version from its build info", m.Agent)
	}
}

// TestBadInputs: each bad input is refused with ErrInvalid and a message naming the file.
func TestBadInputs(t *testing.T) {
	base := unitSpec(t)
	dir := t.TempDir()
	notExec := copyWith(t, base.Agent, filepath.Join(dir, "notexec"), nil, 0o644)
	script := filepath.Join(dir, "script.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755)
	dynamic := "/bin/ls" // Debian's ls is dynamically linked
	tests := []struct {
		name    string
		mutate  func(*Spec)
		wantErr []string
	}{
		{"kernel missing", func(s *Spec) { s.Kernel = "/nonexistent/vmlinuz-1.0" }, []string{"/nonexistent/vmlinuz-1.0", "no such file"}},
		{"module missing", func(s *Spec) { s.Modules = []string{"no_such_module"} }, []string{"no_such_module", "modules.dep", "9.9.9-test"}},
		{"agent dynamic", func(s *Spec) { s.Agent = dynamic }, []string{dynamic, "dynamically linked", "CGO_ENABLED=0"}},
		{"agent missing", func(s *Spec) { s.Agent = filepath.Join(dir, "nope") }, []string{filepath.Join(dir, "nope")}},
		{"agent empty", func(s *Spec) { s.Agent = "" }, []string{"no agent binary"}},
		{"handler not executable", func(s *Spec) { s.Handlers = []Handler{{Name: "h", Path: notExec}} }, []string{notExec, "not executable", "chmod +x"}},
		{"handler script", func(s *Spec) { s.Handlers = []Handler{{Name: "h", Path: script}} }, []string{script, "not an ELF"}},
		{"handler dynamic", func(s *Spec) { s.Handlers = []Handler{{Name: "h", Path: dynamic}} }, []string{dynamic, "dynamically linked"}},
		{"handler bad name", func(s *Spec) { s.Handlers = []Handler{{Name: "Bad Name", Path: base.Agent}} }, []string{"Bad Name", base.Agent}},
		{"agent config unknown field", func(s *Spec) { s.AgentConfig = json.RawMessage(`{"prot": "x"}`) }, []string{"agent config", "prot"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := base
			tc.mutate(&spec)
			s := mustOpen(t)
			_, err := s.Build(context.Background(), spec)
			if err == nil {
				t.Fatalf("Build accepted bad input")
			}
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

func TestStoreGetRemove(t *testing.T) {
	s := mustOpen(t)
	img, err := s.Build(context.Background(), unitSpec(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{img.Digest, img.Digest[:6], "sha256:" + img.Digest[:10]} {
		if got, err := s.Get(ref); err != nil || got.Digest != img.Digest {
			t.Errorf("Get(%q) = %s, %v", ref, got.Digest, err)
		}
	}
	if _, err := s.Get("ab"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Get of a 2-digit ref = %v, want ErrInvalid", err)
	}
	other := "0000"
	if strings.HasPrefix(img.Digest, other) {
		other = "ffff"
	}
	if _, err := s.Get(other); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%s) = %v, want ErrNotFound", other, err)
	}
	if _, err := s.Remove(img.Digest[:8]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Dir); !os.IsNotExist(err) {
		t.Errorf("image dir still there after Remove: %v", err)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("List after Remove = %v", imgs)
	}
}
