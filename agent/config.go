package agent

import (
	"bytes"
	"encoding/json"
	"fmt"

	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/paddockvm/paddock/agent/transport"
)

// Paths of the files an image puts into the initramfs for the agent.
const (
	// ConfigPath is the agent's configuration (Config as JSON).
	ConfigPath = "/etc/paddock/agent.json"
	// ManifestPath is the image's manifest as seen from inside the guest (Manifest).
	ManifestPath = "/etc/paddock/manifest.json"
	// DefaultPort is the name of the virtio-serial port the agent talks on.
	DefaultPort = "org.paddock.agent.0"
	// ReadyPrefix starts the line the agent writes on its port once it is up:
	// "PADDOCK-AGENT READY version=<v> boot_ms=<ms>\n".
	ReadyPrefix = "PADDOCK-AGENT READY"
	// SelfCheckPrefix starts each self-check result line on the port:
	// "PADDOCK-AGENT SELFCHECK disk=/dev/vda ok=true bytes=4096 detail=…\n".
	SelfCheckPrefix = "PADDOCK-AGENT SELFCHECK"
)

// Config is the agent's configuration: /etc/paddock/agent.json inside an image (the
// images package writes it from the image spec), or a file named with --config when the
// agent runs as a service in a full OS image. Unknown fields are an error, so a typo in
// a field name is never silently ignored.
type Config struct {
	// Port is the name of the virtio-serial port to talk on (default
	// "org.paddock.agent.0"); the agent finds it in /sys/class/virtio-ports/*/name.
	Port string `json:"port,omitempty"`
	// PortWait is how long to wait for the port to appear, as a Go duration
	// (default "10s"): the virtio driver may bind after the agent starts.
	PortWait string `json:"port_wait,omitempty"`
	// SelfCheck, when set, makes the agent check the listed block devices after it is
	// ready and report each result on the port (SelfCheckPrefix lines). Used by the
	// image integration tests and handy when bringing up a new host.
	SelfCheck *SelfCheck `json:"self_check,omitempty"`
	// Labels are free-form key/values offered to task requirements.
	Labels map[string]string `json:"labels,omitempty"`

	// Server is the server's agent port ("host:port") for an agent that reaches the
	// server over TCP (outside a micro-VM, or a guest with a network). Empty inside a
	// micro-VM: the agent talks on the virtio-serial Port and the host relays. Several
	// server replicas (sharing one PostgreSQL store) are given as a list, in JSON
	// either ["10.0.0.5:7071", "10.0.0.6:7071"] or "10.0.0.5:7071,10.0.0.6:7071": the
	// agent dials them in turn and reconnects to another when one dies.
	Server ServerList `json:"server,omitempty"`
	// ID is the agent's identity. Default: the value of paddock.id= on the kernel
	// command line (the host daemon sets it to the guest's name), else the host name
	// and a random suffix, unique per process (the agent logs it).
	// Inside a micro-VM the server checks it against the identity the host attests.
	ID string `json:"id,omitempty"`
	// Token is the join token sent to the server (TCP agents outside dev mode).
	Token string `json:"token,omitempty"`
	// Handlers are the handler binaries to run, each with its sha256. Default: the
	// handlers listed in the image manifest.
	Handlers []HandlerConfig `json:"handlers,omitempty"`
	// TotalSlots is how many tasks of all types the agent runs at once. The agent's
	// concurrency allocator shares them among the task types: each type gets its
	// min_slots, and every heartbeat interval the rest go to the types whose queuing
	// delay (measured by the server) is furthest above their tolerable_delay, in
	// multiples of it. The server dispatches each type against the allocation the
	// agent reports, and `paddock agent ls` shows it. Default: the sum of every
	// type's slots (below), so a configuration from before the allocator keeps its
	// capacity.
	TotalSlots int `json:"total_slots,omitempty"`
	// Slots is a type's share of the default total_slots; DefaultSlots applies to
	// the other types that the handler gives no concurrency for (default 4).
	Slots        map[string]int `json:"slots,omitempty"`
	DefaultSlots int            `json:"default_slots,omitempty"`
	// MinSlots is each type's guaranteed minimum (default and least 1): no type ever
	// starves. The minimums must fit in total_slots.
	MinSlots map[string]int `json:"min_slots,omitempty"`
	// TolerableDelay is how long a task of a type may wait in the server's queue
	// before the type needs more slots, as a Go duration per type ("250ms");
	// DefaultTolerableDelay applies to the other types (default "1s").
	TolerableDelay        map[string]string `json:"tolerable_delay,omitempty"`
	DefaultTolerableDelay string            `json:"default_tolerable_delay,omitempty"`
	// MaxOutputBytes is the largest result a handler may return (default 64 MiB).
	MaxOutputBytes int64 `json:"max_output_bytes,omitempty"`
	// HandlerStart is when the handler processes start. Either way the agent
	// registers first, with the task types the image manifest records, as soon as its
	// port is open. "lazy" (the default) starts each handler on the first task of one
	// of its types, so an idle guest holds no handler it has not used (the first task
	// of a type waits for its handler's start: under TCG about a second); "eager"
	// starts them all, one after the other, right after registering (a task that
	// arrives before its handler is up waits for it), at the cost of every handler's
	// memory in every guest. In a warm-start template (snapshot pools) "eager" starts
	// them before the template's ready line, so that the snapshot holds them running
	// and no restored guest starts them again: each restored guest then holds every
	// handler's memory, and its handlers share the template's process state (their
	// Go runtime's seeds, e.g. math/rand's; crypto/rand reads the reseeded kernel
	// and differs). Handlers whose task types the image manifest does not
	// record (images from before manifest schema 2, or handlers given in this file or
	// with --handler) start, in parallel, before the agent registers: it must ask
	// them what they serve.
	HandlerStart string `json:"handler_start,omitempty"`
	// KillGrace is how long a cancelled call may run on before its handler process is
	// killed and restarted, as a Go duration (default "5s").
	KillGrace string `json:"kill_grace,omitempty"`
	// DataDir is where the agent keeps the input and output files of tasks whose
	// blobs travel over its connection to the server (DATA_PATH_STREAM: TCP agents with
	// no host to stage them), one directory per lease, removed once the server has the
	// result. Default: paddock-agent-<id> under the system's temporary directory. What
	// is in it when the agent starts is left from an earlier run and removed, so give
	// each agent its own. Inside a micro-VM the host stages blobs into shared
	// directories instead (api/guestabi) and this is unused.
	DataDir string `json:"data_dir,omitempty"`

	// manifest is the image manifest path (--manifest; default ManifestPath).
	manifest string
}

// Values of Config.HandlerStart.
const (
	HandlerStartLazy  = "lazy"
	HandlerStartEager = "eager"
)

// HandlerConfig is one handler binary. SHA256 is checked before the binary starts; an
// agent outside an image may leave it empty, and the agent then pins the checksum it
// reads at start (and logs it).
type HandlerConfig struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256,omitempty"`
}

// SelfCheck lists boot-time checks.
type SelfCheck struct {
	// Disks are block devices (e.g. "/dev/vda") to write a pattern to and read back.
	// A missing disk is a fatal error: the guest prints it and powers off.
	Disks []string `json:"disks,omitempty"`
	// Pattern is written (repeated to 4096 bytes) at offset 0 of each disk; default
	// "paddock-selfcheck".
	Pattern string `json:"pattern,omitempty"`
}

// Lengths are checked apart from the patterns (maxLen): a counted repetition such as
// {0,127} compiles to that many copies of its class, about 100 KB of heap per pattern
// held for the agent's life (and compiled at start, under TCG in the guest).
var (
	portRE   = maxLen(regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`), 64)
	diskRE   = regexp.MustCompile(`^/dev/[a-z][a-z0-9]*$`)
	idRE     = maxLen(regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`), 128)
	sha256RE = lenMatcher{regexp.MustCompile(`^[0-9a-f]*$`), 64, 64}
)

// lenMatcher matches strings of min to max bytes that re matches.
type lenMatcher struct {
	re       *regexp.Regexp
	min, max int
}

func maxLen(re *regexp.Regexp, n int) lenMatcher { return lenMatcher{re, 1, n} }

// MatchString reports whether s has an allowed length and matches.
func (m lenMatcher) MatchString(s string) bool {
	return len(s) >= m.min && len(s) <= m.max && m.re.MatchString(s)
}

// DefaultConfig returns the configuration used when agent.json is absent.
func DefaultConfig() Config { return Config{Port: DefaultPort, PortWait: "10s"} }

// ParseConfig decodes a JSON configuration over DefaultConfig and validates it.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, fmt.Errorf("decoding agent config: %w (see agent.Config for the fields)", err)
	}
	return cfg, cfg.Validate()
}

// LoadConfig reads and parses the configuration file at path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading agent config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks every field; errors name the JSON field and the fix.
func (c Config) Validate() error {
	if !portRE.MatchString(c.Port) {
		return fmt.Errorf("agent config field port: %q is not a virtio-serial port name; use e.g. %q", c.Port, DefaultPort)
	}
	if _, err := c.portWait(); err != nil {
		return err
	}
	if c.Server != "" {
		if _, err := transport.ParseServers("agent config field server", string(c.Server)); err != nil {
			return err
		}
	}
	if c.ID != "" && !idRE.MatchString(c.ID) {
		return fmt.Errorf("agent config field id: %q: use 1-128 letters, digits, '.', '_', '-' or ':'", c.ID)
	}
	seen := map[string]bool{}
	for i, h := range c.Handlers {
		switch {
		case h.Name == "" || h.Path == "":
			return fmt.Errorf("agent config field handlers[%d]: name and path are required", i)
		case seen[h.Name]:
			return fmt.Errorf("agent config field handlers[%d].name: %q is listed twice", i, h.Name)
		case h.SHA256 != "" && !sha256RE.MatchString(h.SHA256):
			return fmt.Errorf("agent config field handlers[%d].sha256: want 64 lower-case hex digits", i)
		}
		seen[h.Name] = true
	}
	for typ, n := range c.Slots {
		if n < 1 {
			return fmt.Errorf("agent config field slots[%q]: %d; want at least 1", typ, n)
		}
	}
	if c.DefaultSlots < 0 {
		return fmt.Errorf("agent config field default_slots: %d; want 0 (default 4) or more", c.DefaultSlots)
	}
	if c.TotalSlots < 0 {
		return fmt.Errorf("agent config field total_slots: %d; want 0 (default: the sum of the types' slots) or more", c.TotalSlots)
	}
	minSum := 0
	for typ, n := range c.MinSlots {
		if n < 1 {
			return fmt.Errorf("agent config field min_slots[%q]: %d; want at least 1 (a type with no slot would starve)", typ, n)
		}
		minSum += n
	}
	if c.TotalSlots > 0 && minSum > c.TotalSlots {
		return fmt.Errorf("agent config field min_slots: the minimums add up to %d, more than total_slots %d; raise total_slots or lower min_slots", minSum, c.TotalSlots)
	}
	if _, _, err := c.tolerableDelays(); err != nil {
		return err
	}
	if c.MaxOutputBytes < 0 {
		return fmt.Errorf("agent config field max_output_bytes: %d; want 0 (default 64 MiB) or more", c.MaxOutputBytes)
	}
	if c.DataDir != "" && !filepath.IsAbs(c.DataDir) {
		return fmt.Errorf("agent config field data_dir: %q is not an absolute path; use e.g. \"/var/lib/paddock-agent\"", c.DataDir)
	}
	switch c.HandlerStart {
	case "", HandlerStartLazy, HandlerStartEager:
	default:
		return fmt.Errorf("agent config field handler_start: %q: use %q (start each handler on its first task; the default) or %q (start all before registering)", c.HandlerStart, HandlerStartLazy, HandlerStartEager)
	}
	if c.KillGrace != "" {
		if d, err := time.ParseDuration(c.KillGrace); err != nil || d <= 0 {
			return fmt.Errorf("agent config field kill_grace: %q is not a positive Go duration; use e.g. \"5s\"", c.KillGrace)
		}
	}
	if sc := c.SelfCheck; sc != nil {
		for i, d := range sc.Disks {
			if !diskRE.MatchString(d) {
				return fmt.Errorf("agent config field self_check.disks[%d]: %q is not a block device path; use e.g. \"/dev/vda\"", i, d)
			}
		}
		if strings.ContainsAny(sc.Pattern, "\n\x00") {
			return fmt.Errorf("agent config field self_check.pattern: must not contain a newline or NUL")
		}
	}
	return nil
}

// tolerableDelays parses TolerableDelay and DefaultTolerableDelay (0: the default).
func (c Config) tolerableDelays() (map[string]time.Duration, time.Duration, error) {
	out := map[string]time.Duration{}
	for typ, v := range c.TolerableDelay {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, 0, fmt.Errorf("agent config field tolerable_delay[%q]: %q is not a positive Go duration; use e.g. \"250ms\"", typ, v)
		}
		out[typ] = d
	}
	var def time.Duration
	if c.DefaultTolerableDelay != "" {
		d, err := time.ParseDuration(c.DefaultTolerableDelay)
		if err != nil || d <= 0 {
			return nil, 0, fmt.Errorf("agent config field default_tolerable_delay: %q is not a positive Go duration; use e.g. \"1s\"", c.DefaultTolerableDelay)
		}
		def = d
	}
	return out, def, nil
}

// Manifest is what the agent reads of the image manifest (ManifestPath): the kernel
// modules to load, in order, and the handler binaries. The images package writes it;
// its JSON field names are the image manifest's, and images' tests check that this
// type decodes what images writes.
type Manifest struct {
	KernelVersion string           `json:"kernel_version"`
	Modules       []ManifestModule `json:"modules"`
	Handlers      []ManifestFile   `json:"handlers"`
	Agent         ManifestFile     `json:"agent"`
	// HandlerDisk is the read-only disk the handler binaries are on (PID 1 mounts it
	// at its Mount); nil in images whose handlers are packed in the initramfs.
	HandlerDisk *ManifestDisk `json:"handler_disk,omitempty"`
}

// ManifestDisk is the image's handler disk as the guest sees it: the virtio-blk
// serial the host attaches it with, its filesystem, and where PID 1 mounts it.
type ManifestDisk struct {
	Serial string `json:"serial"`
	FSType string `json:"fstype"`
	Mount  string `json:"mount"`
}

// ManifestModule is one kernel module, in load order.
type ManifestModule struct {
	Name string `json:"name"`
	// Path is the plain (uncompressed) .ko file inside the guest.
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// ManifestFile is a binary in the image.
type ManifestFile struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256"`
	// Packed is where an image built before handler disks holds a handler
	// compressed; the runner unpacks it to Path on the handler's first start
	// (runner.HandlerSpec.Packed).
	Packed string `json:"packed,omitempty"`
	// Types are the task types a handler serves, as recorded when the image was built
	// (manifest schema 2 on); empty for the agent and in older images.
	Types []ManifestType `json:"types,omitempty"`
}

// ManifestType is one task type a handler serves.
type ManifestType struct {
	Name        string `json:"name"`
	Version     string `json:"version"`
	Concurrency int    `json:"concurrency"`
}

// onHandlerDisk reports whether path is on the manifest's handler disk.
func (m Manifest) onHandlerDisk(path string) bool {
	d := m.HandlerDisk
	return d != nil && d.Mount != "" && strings.HasPrefix(path, strings.TrimSuffix(d.Mount, "/")+"/")
}

// LoadManifest reads the image manifest at path.
func LoadManifest(path string) (Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Manifest{}, fmt.Errorf("reading image manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return Manifest{}, fmt.Errorf("decoding image manifest %s: %w", path, err)
	}
	return m, nil
}

// ServerList is one server address or several, separated by commas. In JSON it is a
// string ("a:7071" or "a:7071,b:7071") or an array of strings.
type ServerList string

// UnmarshalJSON accepts a string or an array of strings.
func (l *ServerList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = ServerList(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("agent config field server: want \"host:port\", \"host:port,host:port\" or [\"host:port\", ...]: %w", err)
	}
	*l = ServerList(strings.Join(many, ","))
	return nil
}

// Addrs returns the addresses (Validate checked them).
func (l ServerList) Addrs() []string {
	a, _ := transport.ParseServers("server", string(l))
	return a
}
