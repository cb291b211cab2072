package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "paddock.yaml")
	if err := os.WriteFile(file, []byte("hypervisor:\n  uri: test:///default\n  prefix: pd-\nlog:\n  level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PADDOCK_HYPERVISOR_PREFIX", "envpd-")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	AddFlags(fs, "")
	AddFlags(fs, "version")
	if err := fs.Parse([]string{"--log-level=warn"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(file, fs)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, value, source string }{
		{"hypervisor.uri", "test:///default", "file " + file},
		{"hypervisor.prefix", "envpd-", "env PADDOCK_HYPERVISOR_PREFIX"},
		{"log.level", "warn", "flag --log-level"},
		{"hypervisor.accel", "auto", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if got := c.V.GetString(tc.key); got != tc.value {
				t.Errorf("value = %q, want %q", got, tc.value)
			}
			if got := c.Source(tc.key); got != tc.source {
				t.Errorf("source = %q, want %q", got, tc.source)
			}
		})
	}
}

func TestSearchPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "paddock.yaml"), []byte("data_dir: /srv/pd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := SearchPaths
	SearchPaths = []string{dir}
	defer func() { SearchPaths = old }()
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.File != filepath.Join(dir, "paddock.yaml") || c.V.GetString("data_dir") != "/srv/pd" {
		t.Fatalf("searched file = %q, data_dir = %q", c.File, c.V.GetString("data_dir"))
	}
}

func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, body, wantErr string }{
		{"unknown key", "hypervisor:\n  urii: x\n", "hypervisor.urii"},
		{"bad yaml", "hypervisor: [\n", "reading config file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			if err := os.WriteFile(f, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(f, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load error = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("missing --config file error = %v", err)
	}
}

// TestSearchIgnoresBinary: a file named just "paddock" (the binary, run from its own
// directory) is not a configuration file.
func TestSearchIgnoresBinary(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "paddock"), []byte("\x7fELF\x00\x01binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := SearchPaths
	SearchPaths = []string{dir}
	defer func() { SearchPaths = old }()
	c, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load with a binary named paddock in the search path: %v", err)
	}
	if c.File != "" {
		t.Fatalf("Load picked %q as the config file", c.File)
	}
}
