package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Execute(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestConfigShowSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(file, []byte("hypervisor:\n  accel: tcg\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PADDOCK_DATA_DIR", "/srv/paddock")
	out, errOut, code := run(t, "config", "show", "--json", "--config", file, "--libvirt-uri", "test:///default")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		File string
		Keys []struct {
			Key, Source string
			Value       any
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("config show --json printed %q: %v", out, err)
	}
	want := map[string]string{
		"hypervisor.accel": "tcg|file " + file,
		"data_dir":         "/srv/paddock|env PADDOCK_DATA_DIR",
		"hypervisor.uri":   "test:///default|flag --libvirt-uri",
		"log.level":        "info|default",
	}
	for _, k := range got.Keys {
		if w, ok := want[k.Key]; ok {
			if g := k.Value.(string) + "|" + k.Source; g != w {
				t.Errorf("%s = %q, want %q", k.Key, g, w)
			}
			delete(want, k.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("keys missing from config show: %v", want)
	}
}

func TestBadInvocations(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantErr  string
	}{
		{"unknown flag", []string{"version", "--nope"}, nil, 2, "unknown flag: --nope"},
		{"bad log format", []string{"version"}, map[string]string{"PADDOCK_LOG_FORMAT": "xml"}, 1, "log.format"},
		{"bad log level", []string{"version", "--log-level", "loud"}, nil, 1, "log.level"},
		{"missing config file", []string{"config", "show", "--config", "/nonexistent/paddock.yaml"}, nil, 1, "/nonexistent/paddock.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, errOut, code := run(t, tc.args...)
			if code != tc.wantCode || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.wantCode, tc.wantErr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, errOut, code := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "paddock ") {
		t.Fatalf("version: exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestVersionHypervisorTestDriver(t *testing.T) {
	out, errOut, code := run(t, "version", "--hypervisor", "--libvirt-uri", "test:///default", "--accel", "tcg")
	if code != 0 || !strings.Contains(out, "libvirt") || !strings.Contains(out, "accel    tcg") {
		t.Fatalf("version --hypervisor: exit %d, out %q, err %q", code, out, errOut)
	}
	_, errOut, code = run(t, "version", "--hypervisor", "--libvirt-uri", "qemu+tcp://127.0.0.1:1/system")
	if code != 1 || !strings.Contains(errOut, "hypervisor.uri") {
		t.Fatalf("unreachable URI: exit %d, err %q; want an error naming hypervisor.uri", code, errOut)
	}
}
