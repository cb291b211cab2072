package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
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
	// Labels are free-form key/values reported to the server (later: in the hello).
	Labels map[string]string `json:"labels,omitempty"`
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

var (
	portRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	diskRE = regexp.MustCompile(`^/dev/[a-z][a-z0-9]*$`)
)

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

// Manifest is what the agent reads of the image manifest (ManifestPath): the kernel
// modules to load, in order, and the handler binaries. The images package writes it;
// its JSON field names are the image manifest's, and images' tests check that this
// type decodes what images writes.
type Manifest struct {
	KernelVersion string           `json:"kernel_version"`
	Modules       []ManifestModule `json:"modules"`
	Handlers      []ManifestFile   `json:"handlers"`
	Agent         ManifestFile     `json:"agent"`
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
