package cli

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/images/kmod"
)

// TestImageCommands builds an image through the CLI from a synthetic kernel and module
// tree with the real agent, then lists, inspects and removes it, and checks that a bad
// handler is refused with an error naming the file.
func TestImageCommands(t *testing.T) {
	dir := t.TempDir()
	agentBin := filepath.Join(dir, "paddock-agent")
	build := exec.Command("go", "build", "-o", agentBin, "github.com/paddockvm/paddock/cmd/paddock-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build paddock-agent: %v: %s", err, out)
	}
	th := filepath.Join(dir, "testhandler")
	build = exec.Command("go", "build", "-o", th, "github.com/paddockvm/paddock/plugins/handlers/testhandler")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testhandler: %v: %s", err, out)
	}
	kernel := filepath.Join(dir, "vmlinuz-9.9.9-cli")
	os.WriteFile(kernel, []byte("not really a kernel"), 0o644)
	mods := filepath.Join(dir, "modules")
	var dep strings.Builder
	for _, m := range append(slices.Clone(kmod.DefaultGuestModules), images.HandlerDiskModules...) {
		os.MkdirAll(filepath.Join(mods, "kernel"), 0o755)
		os.WriteFile(filepath.Join(mods, "kernel", m+".ko"), []byte(m), 0o644)
		dep.WriteString("kernel/" + m + ".ko:\n")
	}
	os.WriteFile(filepath.Join(mods, "modules.dep"), []byte(dep.String()), 0o644)
	store := filepath.Join(dir, "store")
	common := []string{"--images-dir", store, "--config", filepath.Join(dir, "none.yaml")}
	os.WriteFile(filepath.Join(dir, "none.yaml"), nil, 0o644)

	out, errOut, code := run(t, append([]string{"image", "build", "--kernel", kernel, "--modules-dir", mods, "--agent", agentBin,
		"--handler", "testhandler=" + th + "@2.0.0"}, common...)...)
	if code != 0 {
		t.Fatalf("image build: exit %d: %s", code, errOut)
	}
	digest := strings.TrimSpace(out)
	if len(digest) != 64 {
		t.Fatalf("image build printed %q, want a digest", out)
	}
	out, errOut, code = run(t, append([]string{"image", "ls"}, common...)...)
	if code != 0 || !strings.Contains(out, digest[:12]) || !strings.Contains(out, "9.9.9-cli") || !strings.Contains(out, "testhandler") {
		t.Fatalf("image ls: exit %d, out %q, err %s", code, out, errOut)
	}
	out, errOut, code = run(t, append([]string{"image", "inspect", digest[:8]}, common...)...)
	var m struct {
		Digest   string
		Handlers []struct {
			Name, Version string
			Types         []struct {
				Name, Version string
				Concurrency   int
			}
		}
	}
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || m.Digest != digest || len(m.Handlers) != 1 || m.Handlers[0].Version != "2.0.0" {
		t.Fatalf("image inspect: exit %d, out %s, err %s", code, out, errOut)
	}
	var types []string
	for _, tt := range m.Handlers[0].Types {
		types = append(types, tt.Name)
		if tt.Version != "1.0.0" || tt.Concurrency != 4 {
			t.Errorf("image inspect: testhandler type %+v, want version 1.0.0 and concurrency 4", tt)
		}
	}
	if !slices.Contains(types, "test.echo") || !slices.Contains(types, "test.sleep") || len(types) != 10 {
		t.Fatalf("image inspect: testhandler serves %v, want its 10 test.* types", types)
	}
	if _, errOut, code = run(t, append([]string{"image", "rm", digest[:8]}, common...)...); code != 0 {
		t.Fatalf("image rm: exit %d: %s", code, errOut)
	}
	if out, _, _ = run(t, append([]string{"image", "ls"}, common...)...); strings.Contains(out, digest[:12]) {
		t.Fatalf("image still listed after rm: %s", out)
	}
	notExec := filepath.Join(dir, "h")
	os.WriteFile(notExec, []byte("x"), 0o644)
	_, errOut, code = run(t, append([]string{"image", "build", "--kernel", kernel, "--modules-dir", mods, "--agent", agentBin,
		"--handler", "h=" + notExec}, common...)...)
	if code != 1 || !strings.Contains(errOut, notExec) || !strings.Contains(errOut, "not executable") {
		t.Fatalf("bad handler: exit %d, stderr %s", code, errOut)
	}
}
