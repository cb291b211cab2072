package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/config"
)

const deployedExample = "../../deploy/paddock.example.yaml"

// TestConfigExampleIsDeployed keeps deploy/paddock.example.yaml equal to the output of
// `paddock config example`, so the deployed example documents every key of the binary.
func TestConfigExampleIsDeployed(t *testing.T) {
	out, errOut, code := run(t, "config", "example")
	if code != 0 {
		t.Fatalf("paddock config example: exit %d: %s", code, errOut)
	}
	b, err := os.ReadFile(deployedExample)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != out {
		t.Fatalf("deploy/paddock.example.yaml is not the output of `paddock config example` (a key was added or changed);\n"+
			"regenerate it: go run ./cmd/paddock config example > deploy/paddock.example.yaml\n\nfirst difference: %s", firstDiff(string(b), out))
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: file %q, generated %q", i+1, x, y)
		}
	}
	return "none"
}

// TestConfigExampleLoads loads the generated example as a configuration file: no key
// is unknown, every key is documented with its environment variable, and every value
// read back is the key's default.
func TestConfigExampleLoads(t *testing.T) {
	out, errOut, code := run(t, "config", "example")
	if code != 0 {
		t.Fatalf("paddock config example: exit %d: %s", code, errOut)
	}
	f := filepath.Join(t.TempDir(), "paddock.yaml")
	if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f, nil)
	if err != nil {
		t.Fatalf("loading the example: %v", err)
	}
	for _, k := range config.Keys() {
		if !strings.Contains(out, "# env "+config.EnvVar(k.Name)) {
			t.Errorf("key %s: no '# env %s' line", k.Name, config.EnvVar(k.Name))
		}
		if _, machine := exampleValue[k.Name]; machine {
			if cfg.V.InConfig(k.Name) {
				t.Errorf("key %s has a machine-dependent default and must be commented out", k.Name)
			}
			continue
		}
		if !cfg.V.InConfig(k.Name) {
			t.Errorf("key %s is not set in the example", k.Name)
			continue
		}
		var got, want any = nil, k.Default
		switch d := k.Default.(type) {
		case string:
			got = cfg.V.GetString(k.Name)
		case bool:
			got = cfg.V.GetBool(k.Name)
		case int:
			got = cfg.V.GetInt(k.Name)
		case float64:
			got = cfg.V.GetFloat64(k.Name)
		case time.Duration:
			got = cfg.V.GetDuration(k.Name)
		case []string:
			got, want = fmt.Sprint(cfg.V.GetStringSlice(k.Name)), fmt.Sprint(d)
		default:
			got, want = fmt.Sprint(cfg.V.Get(k.Name)), fmt.Sprint(d)
		}
		if got != want {
			t.Errorf("key %s: the example gives %v (%T), the default is %v (%T)", k.Name, got, got, want, want)
		}
	}
}

func TestYAMLValue(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"a \"b\"", `"a \"b\""`},
		{true, "true"},
		{4 << 20, "4194304"},
		{0.0, "0.0"},
		{2.5, "2.5"},
		{10 * time.Minute, `"10m0s"`},
		{[]string{}, "[]"},
		{[]string{"a", "b"}, `["a", "b"]`},
		{[]any{}, "[]"},
	}
	for _, tc := range tests {
		if got := yamlValue(tc.in); got != tc.want {
			t.Errorf("yamlValue(%#v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
