package hypervisor

import (
	"net/url"
	"regexp"
	"strings"
)

// Accel is the acceleration a guest runs with.
type Accel string

const (
	// AccelAuto picks kvm where hardware virtualization really works, else tcg.
	AccelAuto Accel = "auto"
	// AccelKVM runs guests as libvirt domain type "kvm".
	AccelKVM Accel = "kvm"
	// AccelTCG runs guests under QEMU's software emulation (domain type "qemu").
	AccelTCG Accel = "tcg"
)

// Config is the hypervisor section of Paddock's configuration (keys hypervisor.uri,
// hypervisor.prefix, hypervisor.accel).
type Config struct {
	// URI is the libvirt connection URI, e.g. qemu:///system or test:///default.
	URI string `mapstructure:"uri" json:"uri" yaml:"uri"`
	// Prefix is carried by the name of every domain Paddock creates; domains whose names
	// lack it are never listed, looked up, shut down or destroyed.
	Prefix string `mapstructure:"prefix" json:"prefix" yaml:"prefix"`
	// Accel is auto, kvm or tcg.
	Accel Accel `mapstructure:"accel" json:"accel" yaml:"accel"`
}

// Defaults.
const (
	DefaultURI    = "qemu:///system"
	DefaultPrefix = "paddock-"
)

// DefaultConfig returns URI qemu:///system, prefix "paddock-", accel auto.
func DefaultConfig() Config {
	return Config{URI: DefaultURI, Prefix: DefaultPrefix, Accel: AccelAuto}
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Validate checks the configuration without touching libvirt. Errors are *FieldError
// naming the configuration key (hypervisor.uri, hypervisor.prefix, hypervisor.accel).
func (c Config) Validate() error {
	if c.URI == "" {
		return fieldErr("hypervisor.uri", "set it to a libvirt URI, e.g. "+DefaultURI, "empty")
	}
	if u, err := url.Parse(c.URI); err != nil || u.Scheme == "" {
		return fieldErr("hypervisor.uri", "use a libvirt URI such as "+DefaultURI+" or test:///default", "%q is not a libvirt URI", c.URI)
	}
	if c.Prefix == "" {
		return fieldErr("hypervisor.prefix", "set a prefix such as "+DefaultPrefix+" so Paddock never touches other domains on the host", "empty")
	}
	if len(c.Prefix) > 32 || !prefixRE.MatchString(c.Prefix) {
		return fieldErr("hypervisor.prefix", "use at most 32 letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. "+DefaultPrefix, "%q is not allowed", c.Prefix)
	}
	switch c.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return fieldErr("hypervisor.accel", "use auto, kvm or tcg", "%q is not an acceleration", c.Accel)
	}
	return nil
}

// isTestURI reports whether uri is libvirt's in-process test driver.
func isTestURI(uri string) bool { return strings.HasPrefix(uri, "test:") }
