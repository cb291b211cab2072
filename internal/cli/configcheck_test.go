package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigTypos: a value that does not parse as its key's type is an error naming
// the key, the value, where it came from and the form wanted, for `config show` and
// for every command (before the fix each became the key's zero value or default
// silently, and config show printed it as if it were in force).
func TestConfigTypos(t *testing.T) {
	tests := []struct {
		name, yaml, wantForm string
	}{
		{"duration word", "server:\n  lease_ttl: banana\n", "want a duration"},
		{"schedule timeout word", "server:\n  schedule_to_start_timeout: banana\n", "want a duration"},
		{"negative schedule timeout", "server:\n  schedule_to_start_timeout: -5m\n", "want 0 or more"},
		{"duration with spaces", "server:\n  lease_ttl: 2 minutes\n", "want a duration"},
		{"duration without unit", "server:\n  retry_base: 30\n", "want a duration"},
		{"negative duration", "server:\n  retry_max: -1s\n", "want 0 or more"},
		{"unit on a plain byte count", "server:\n  max_inline_bytes: 1MiB\n", "no units: this key takes a plain number"},
		{"fraction for a whole number", "server:\n  default_max_attempts: 2.5\n", "want a whole number"},
		{"bad byte size", "server:\n  max_output_bytes: lots\n", "a number with a unit such as 64MiB"},
		{"negative byte size", "host:\n  cache_disk_bytes: \"-5\"\n", "want 0 or more bytes"},
		{"bool word", "server:\n  dev: maybe\n", "want true or false"},
		{"float word", "host:\n  thresholds:\n    cpu_percent: high\n", "want a number"},
		{"enum", "log:\n  level: verbose\n", "want debug, info, warn or error"},
		{"list for a string", "server:\n  listen: [a, b]\n", "not a list or a map"},
		// A 0 the server would replace by its default is refused: config show must not
		// show a value that is not in force.
		{"zero lease ttl", "server:\n  lease_ttl: 0s\n", "want more than 0 (leave the key out for the default, 10s)"},
		{"zero inline limit", "server:\n  max_inline_bytes: 0\n", "want more than 0"},
		{"zero host tick", "host:\n  tick: 0s\n", "want more than 0"},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			if err := os.WriteFile(file, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			key := yamlKey(tc.yaml)
			for _, args := range [][]string{{"config", "show"}, {"server"}} {
				out, errOut, code := run(t, append(args, "--config", file)...)
				if code == 0 {
					t.Fatalf("paddock %v with %q: exit 0\n%s", args, tc.yaml, out)
				}
				for _, want := range []string{"config: " + key + " = ", "from file " + file, tc.wantForm} {
					if !strings.Contains(errOut, want) {
						t.Errorf("paddock %v with %q: stderr %q lacks %q", args, tc.yaml, errOut, want)
					}
				}
				if strings.Contains(out, key) {
					t.Errorf("paddock %v printed the refused value: %s", args, out)
				}
			}
		})
	}
}

// TestConfigTypoFromEnv: the environment is checked as the file is, and names itself.
func TestConfigTypoFromEnv(t *testing.T) {
	t.Setenv("PADDOCK_SERVER_LEASE_TTL", "10 s")
	_, errOut, code := run(t, "config", "show")
	if code == 0 || !strings.Contains(errOut, `config: server.lease_ttl = "10 s" (from env PADDOCK_SERVER_LEASE_TTL): want a duration`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

// TestConfigShowInForce: config show prints each value as the program reads it.
func TestConfigShowInForce(t *testing.T) {
	t.Setenv("PADDOCK_SERVER_LEASE_TTL", "90s")
	t.Setenv("PADDOCK_SERVER_DEV", "1")
	out, _ := mustRun(t, "config", "show")
	for _, want := range []string{"server.lease_ttl", "1m30s", "server.dev"} {
		if !strings.Contains(out, want) {
			t.Errorf("config show lacks %q:\n%s", want, out)
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "server.dev ") && !strings.Contains(l, "true") {
			t.Errorf("server.dev from PADDOCK_SERVER_DEV=1 shows %q, want true", l)
		}
	}
}

// yamlKey returns the dotted key of a nested YAML document with one leaf.
func yamlKey(doc string) string {
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(doc), "\n") {
		k, _, _ := strings.Cut(strings.TrimSpace(l), ":")
		parts = append(parts, k)
	}
	return strings.Join(parts, ".")
}
