package cache

import (
	"math"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Dir = "/var/lib/paddock/cache"
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantKey string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"lrfu", func(c *Config) { c.Policy, c.Lambda = PolicyLRFU, 1 }, ""},
		{"no memory tier", func(c *Config) { c.MemoryBytes = 0 }, ""},
		{"no dir", func(c *Config) { c.Dir = "" }, "host.cache_dir"},
		{"negative memory", func(c *Config) { c.MemoryBytes = -1 }, "host.cache_memory_bytes"},
		{"no disk", func(c *Config) { c.DiskBytes = 0 }, "host.cache_disk_bytes"},
		{"policy", func(c *Config) { c.Policy = "arc" }, "host.cache_policy"},
		{"lambda", func(c *Config) { c.Lambda = 2 }, "host.cache_lrfu_lambda"},
		{"lambda NaN", func(c *Config) { c.Lambda = math.NaN() }, "host.cache_lrfu_lambda"},
		{"read policy", func(c *Config) { c.ReadPolicy = "nocache" }, "host.cache_read_policy"},
		{"write policy", func(c *Config) { c.WritePolicy = "back" }, "host.cache_write_policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("Validate = %v; want an error naming %s", err, tc.wantKey)
			}
			if _, oerr := Open(cfg, newMemSource(), newMemSink(), nil); oerr == nil {
				t.Fatal("Open accepted the bad config")
			}
		})
	}
}

// TestPinnedNotEvicted: a blob in use is not evicted to make room; once released it is.
func TestPinnedNotEvicted(t *testing.T) {
	cfg := testConfig(t)
	cfg.DiskBytes = 5000
	cfg.MemoryBytes = 0
	src := newMemSource()
	a, b := src.add(randBytes(80, 4000)), src.add(randBytes(81, 4000))
	c := mustOpen(t, cfg, src, newMemSink())
	dst := t.TempDir() + "/x"
	if _, err := c.Link(t.Context(), a, 4000, dst); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.files[a].pins++ // as during a Link or an upload of a
	c.mu.Unlock()
	if _, err := c.Link(t.Context(), b, 4000, dst); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("Link that needs the room of a pinned blob: %v; want ErrFull saying it is in use", err)
	}
	c.mu.Lock()
	c.files[a].pins--
	c.mu.Unlock()
	if _, err := c.Link(t.Context(), b, 4000, dst); err != nil {
		t.Fatalf("Link after the pin is released: %v", err)
	}
	if has := c.Has(a); len(has) != 0 {
		t.Fatalf("a is still in %v; want evicted", has)
	}
}
