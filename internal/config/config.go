package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix is the prefix of the environment variables (PADDOCK_HYPERVISOR_URI, …).
const EnvPrefix = "PADDOCK"

// FileName is the configuration file's base name, searched in SearchPaths.
const FileName = "paddock.yaml"

// SearchPaths are the directories searched for paddock.yaml, in order.
var SearchPaths = []string{".", "/etc/paddock"}

// Key is one configuration key.
type Key struct {
	// Name is the dotted key, e.g. "hypervisor.uri".
	Name string
	// Default is the value when nothing sets it; its Go type is the key's type
	// (string, int, bool, time.Duration, []string; map[string]any for a map whose keys
	// the reader checks, such as host.bandwidth_classes).
	Default any
	// Usage says what the key does, for flags and docs.
	Usage string
	// Flag is the name of the command-line flag bound to the key, or "" for none.
	Flag string
	// Cmds are the top-level commands (e.g. "server", "host") that get the flag; empty
	// means every command (a global flag).
	Cmds []string
	// OneOf, for a string key, lists the values it takes (empty: any).
	OneOf []string
	// Check, for a string key, returns an error saying the form wanted when the value
	// does not have it (e.g. a byte size); nil: any string.
	Check func(string) error
	// Positive, for a number or duration key, refuses 0: the program would put its
	// default in place of a 0, so a 0 would not be the value in force (and `config
	// show` would show a value that is not).
	Positive bool
}

// HypervisorCmds are the commands that talk to libvirt and so get the hypervisor flags.
var HypervisorCmds = []string{"version", "host", "dev"}

// Keys are all the configuration keys Paddock knows, in display order. Packages'
// commands add theirs with Register before Load is called.
var keys = []Key{
	{Name: "log.level", Default: "info", Usage: "log level: debug, info, warn or error", Flag: "log-level", OneOf: []string{"debug", "info", "warn", "error"}},
	{Name: "log.format", Default: "auto", Usage: "log format: auto (text on a terminal, JSON otherwise), text or json", Flag: "log-format", OneOf: []string{"auto", "text", "json"}},
	{Name: "data_dir", Default: "/var/lib/paddock", Usage: "directory for the server's database, images and host state", Flag: "data-dir"},
	{Name: "hypervisor.uri", Default: "qemu:///system", Usage: "libvirt connection URI", Flag: "libvirt-uri", Cmds: HypervisorCmds},
	{Name: "hypervisor.prefix", Default: "paddock-", Usage: "name prefix of the domains Paddock owns; no other domain is touched"},
	{Name: "hypervisor.accel", Default: "auto", Usage: "guest acceleration: auto (kvm only where hardware virtualization works), kvm or tcg", Flag: "accel", Cmds: HypervisorCmds, OneOf: []string{"auto", "kvm", "tcg"}},
}

// Register adds keys. It panics on a duplicate name: keys are declared at init time.
func Register(ks ...Key) {
	for _, k := range ks {
		for _, old := range keys {
			if old.Name == k.Name {
				panic("config: key " + k.Name + " registered twice")
			}
		}
		keys = append(keys, k)
	}
}

// mapKeys are the declared maps of objects (RegisterMap), by prefix.
var mapKeys = map[string]string{}

// RegisterMap declares prefix (e.g. "tenants") as a map whose keys the user names
// (tenants.<name>.<field>): the loader does not refuse the keys under it as unknown;
// the command reading them checks each, naming it. usage documents it.
func RegisterMap(prefix, usage string) { mapKeys[prefix] = usage }

// Keys returns the declared keys in display order.
func Keys() []Key { return append([]Key(nil), keys...) }

// AddFlags defines on fs a flag for every key that has one and belongs to cmd (a
// top-level command name; "" for the global flags, the keys without Cmds; "*" for
// every key), unless fs already has it.
func AddFlags(fs *pflag.FlagSet, cmd string) {
	for _, k := range keys {
		if k.Flag == "" || fs.Lookup(k.Flag) != nil || !k.forCmd(cmd) {
			continue
		}
		switch d := k.Default.(type) {
		case string:
			fs.String(k.Flag, d, k.Usage)
		case int:
			fs.Int(k.Flag, d, k.Usage)
		case bool:
			fs.Bool(k.Flag, d, k.Usage)
		case time.Duration:
			fs.Duration(k.Flag, d, k.Usage)
		case []string:
			fs.StringSlice(k.Flag, d, k.Usage)
		default:
			panic(fmt.Sprintf("config: key %s has unsupported default type %T", k.Name, k.Default))
		}
	}
}

func (k Key) forCmd(cmd string) bool {
	if cmd == "*" {
		return true
	}
	if cmd == "" {
		return len(k.Cmds) == 0
	}
	for _, c := range k.Cmds {
		if c == cmd {
			return true
		}
	}
	return false
}

// Config is a loaded configuration.
type Config struct {
	V *viper.Viper
	// File is the configuration file read, or "" when none was found.
	File  string
	flags *pflag.FlagSet
}

// Load reads the configuration. file is the --config value ("" to search SearchPaths);
// fs holds the command's flags (may be nil). A named file that cannot be read, a file
// that does not parse, a file with an undeclared key, or a value (from the file, the
// environment or a flag) that does not parse as its key's type is an error.
func Load(file string, fs *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	for _, k := range keys {
		v.SetDefault(k.Name, k.Default)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	if fs != nil {
		for _, k := range keys {
			if f := fs.Lookup(k.Flag); k.Flag != "" && f != nil {
				if err := v.BindPFlag(k.Name, f); err != nil {
					return nil, fmt.Errorf("binding flag --%s: %w", k.Flag, err)
				}
			}
		}
	}
	c := &Config{V: v, flags: fs}
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("reading config file %s (from --config): %w", file, err)
		}
		c.File = file
	} else if found := search(); found != "" {
		// Searched by hand: viper's own search also matches a file named just
		// "paddock" (such as the binary itself in the current directory).
		v.SetConfigFile(found)
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("reading config file %s: %w", found, err)
		}
		c.File = found
	}
	if err := c.checkUnknown(); err != nil {
		return nil, err
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

// search returns the first SearchPaths/paddock.yaml that is a regular file, or "".
func search() string {
	for _, dir := range SearchPaths {
		p := filepath.Join(dir, FileName)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// checkUnknown refuses keys in the file that no one declared.
func (c *Config) checkUnknown() error {
	if c.File == "" {
		return nil
	}
	known := map[string]bool{}
	prefixes := map[string]bool{}
	var open []string // keys whose default is a map: every key under them is theirs
	for _, k := range keys {
		known[k.Name] = true
		if _, ok := k.Default.(map[string]any); ok {
			open = append(open, k.Name+".")
		}
		for p := k.Name; strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			prefixes[p] = true
		}
	}
	var unknown []string
	under := func(k string) bool {
		for _, p := range open {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
		return false
	}
	for _, k := range c.V.AllKeys() {
		if !known[k] && !prefixes[k] && !under(k) && !underMap(k) && c.V.InConfig(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config file %s: unknown key(s) %s: check the spelling against `paddock config show`", c.File, strings.Join(unknown, ", "))
	}
	return nil
}

// underMap reports whether key is inside a map declared with RegisterMap.
func underMap(key string) bool {
	for p := range mapKeys {
		if strings.HasPrefix(key, p+".") {
			return true
		}
	}
	return false
}

// Source says where the effective value of key came from: "flag --x", "env PADDOCK_X",
// "file <path>" or "default".
func (c *Config) Source(key string) string {
	for _, k := range keys {
		if k.Name != key || k.Flag == "" || c.flags == nil {
			continue
		}
		if f := c.flags.Lookup(k.Flag); f != nil && f.Changed {
			return "flag --" + k.Flag
		}
	}
	env := EnvVar(key)
	if _, ok := os.LookupEnv(env); ok {
		return "env " + env
	}
	if c.File != "" && c.V.InConfig(key) {
		return "file " + c.File
	}
	return "default"
}

// EnvVar returns the environment variable of key: PADDOCK_ + upper case, dots and dashes
// as underscores.
func EnvVar(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// Entry is one key's effective value and its source.
type Entry struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`
	Source string `json:"source"`
}

// Entries returns every declared key with its effective value (as the program reads
// it: a duration as "1m30s" whatever its spelling) and source. Keys whose name ends
// in "token", "password", "key_file" or "secret_key" show "(set)" instead of the value.
func (c *Config) Entries() []Entry {
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		val := c.value(k)
		if secret(k.Name) {
			if s := fmt.Sprint(val); s != "" {
				val = "(set)"
			}
		}
		out = append(out, Entry{Key: k.Name, Value: val, Source: c.Source(k.Name)})
	}
	return out
}

// value returns k's value through the getter of its type, as the program reads it.
func (c *Config) value(k Key) any {
	switch k.Default.(type) {
	case time.Duration:
		return c.V.GetDuration(k.Name).String()
	case int:
		return c.V.GetInt64(k.Name)
	case float64:
		return c.V.GetFloat64(k.Name)
	case bool:
		return c.V.GetBool(k.Name)
	case string:
		return c.V.GetString(k.Name)
	}
	return c.V.Get(k.Name)
}

func secret(name string) bool {
	return strings.HasSuffix(name, "token") || strings.HasSuffix(name, "password") || strings.HasSuffix(name, "key_file") ||
		strings.HasSuffix(name, "secret_key") || strings.HasSuffix(name, "_dsn") // a DSN carries its password
}
