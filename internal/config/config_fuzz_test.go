package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// writeConfig writes data as dir/paddock.yaml and returns its path.
func writeConfig(t *testing.T, dir string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// nested turns dotted keys into the YAML maps a file writes them as.
func nested(flat map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range flat {
		m, parts := out, strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, _ := m[p].(map[string]any)
			if sub == nil {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	return out
}

// FuzzLoad loads a fuzzed paddock.yaml. Load must return an error, not panic, on
// anything; what it accepts must hold only declared keys, report them as coming from
// the file, and survive a round trip: the file's values written back as YAML load to
// the same values. A declared key set to a fuzzed string in a rendered file must load
// as exactly that string (parse(render(x)) == x), unless the key takes only some
// strings (OneOf, Check): then it is refused with an error naming the key.
//
//	go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 10m ./internal/config
func FuzzLoad(f *testing.F) {
	f.Add([]byte("hypervisor:\n  uri: test:///default\n  prefix: pd-\nlog:\n  level: debug\n"), uint8(0), "debug")
	f.Add([]byte("log: {level: warn, format: json}\ndata_dir: /tmp/x\n"), uint8(1), "true")
	f.Add([]byte("hypervisor:\n  uri: 5\n  bogus: 1\n"), uint8(3), "0x10")
	f.Add([]byte("log: 5\n"), uint8(2), "")
	f.Add([]byte("- a\n- b\n"), uint8(4), "a: b")
	f.Add([]byte("data_dir: &a [*a]\n"), uint8(5), "~")
	f.Add([]byte("log:\n  level: !!binary aGVsbG8=\n"), uint8(0), "2001-12-14")
	f.Add([]byte("\xef\xbb\xbflog:\n\tlevel: x\n"), uint8(0), "\n\t\"'\\")
	f.Fuzz(func(t *testing.T, data []byte, keyIndex uint8, value string) {
		dir := t.TempDir()
		c, err := Load(writeConfig(t, dir, data), nil)
		if err == nil {
			checkLoaded(t, c, dir)
		}

		// parse(render(x)) == x for a string value of a declared key.
		if !utf8.ValidString(value) {
			return
		}
		k := keys[int(keyIndex)%len(keys)]
		key := k.Name
		if _, set := os.LookupEnv(EnvVar(key)); set {
			t.Skipf("%s is set in the environment", EnvVar(key))
		}
		b, err := yaml.Marshal(nested(map[string]any{key: value}))
		if err != nil {
			t.Fatalf("rendering %s: %q: %v", key, value, err)
		}
		c, err = Load(writeConfig(t, dir, b), nil)
		if err != nil && (k.Check != nil || len(k.OneOf) > 0) {
			// A key that takes only some strings refuses the others, by name.
			if !strings.Contains(err.Error(), "config: "+key+" = ") {
				t.Fatalf("%s = %q refused without naming the key: %v", key, value, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("a rendered file with %s = %q does not load: %v\n%s", key, value, err, b)
		}
		if got := c.V.Get(key); got != value {
			t.Fatalf("%s = %q rendered as\n%s\nloads as %#v", key, value, b, got)
		}
		if src := c.Source(key); src != "file "+c.File {
			t.Fatalf("%s comes from %q, want the file", key, src)
		}
	})
}

// checkLoaded checks an accepted configuration: only declared keys (or their parents)
// from the file, each reported as from the file, and its values round-trip through
// YAML.
func checkLoaded(t *testing.T, c *Config, dir string) {
	t.Helper()
	declared := map[string]bool{}
	for _, k := range keys {
		declared[k.Name] = true
		for p := k.Name; strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			declared[p] = true
		}
	}
	flat := map[string]any{}
	for _, k := range c.V.AllKeys() {
		if !c.V.InConfig(k) {
			continue
		}
		if !declared[k] {
			t.Fatalf("Load accepted undeclared key %q", k)
		}
		for _, dk := range keys {
			if dk.Name == k {
				flat[k] = c.V.Get(k)
				if _, set := os.LookupEnv(EnvVar(k)); !set && c.Source(k) != "file "+c.File {
					t.Fatalf("%s is in the file but its source is %q", k, c.Source(k))
				}
			}
		}
	}
	if len(c.Entries()) != len(keys) {
		t.Fatalf("%d entries for %d keys", len(c.Entries()), len(keys))
	}
	b, err := yaml.Marshal(nested(flat))
	if err != nil {
		return // values YAML cannot write back (a decoded !!binary, say) are not a config error
	}
	c2, err := Load(writeConfig(t, dir, b), nil)
	if err != nil {
		t.Fatalf("the accepted values %v written back as\n%s\ndo not load: %v", flat, b, err)
	}
	for k, v := range flat {
		if got := c2.V.Get(k); !reflect.DeepEqual(got, v) {
			t.Fatalf("%s = %#v written back as\n%s\nloads as %#v", k, v, b, got)
		}
	}
}
