package vmpool

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// Error classes; test with errors.Is.
var (
	// ErrInvalid: a configuration value is wrong (a *ConfigError says which).
	ErrInvalid = errors.New("invalid configuration")
	// ErrNotFound: no guest with that name in any pool.
	ErrNotFound = errors.New("guest not found")
	// ErrState: the guest cannot do that in its current state (e.g. a task started on
	// a guest that is still booting or already stopping).
	ErrState = errors.New("guest in the wrong state")
)

// ConfigError is a bad configuration value: which pool (empty for the host-wide
// settings), which field, what is wrong and how to fix it. It wraps ErrInvalid, and
// images.ErrNotFound when the pool's image is not in the store.
type ConfigError struct {
	Pool    string
	Field   string // the configuration key, e.g. "min_idle", "image", "run_dir"
	Problem string
	Fix     string
	Err     error // an underlying cause, if any
}

func (e *ConfigError) Error() string {
	s := "invalid " + e.Field + ": " + e.Problem
	if e.Pool != "" {
		s = fmt.Sprintf("pool %q: %s", e.Pool, s)
	}
	if e.Fix != "" {
		s += " (fix: " + e.Fix + ")"
	}
	return s
}

// Unwrap makes errors.Is(err, ErrInvalid) true, and exposes the cause.
func (e *ConfigError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

func cfgErr(pool, field, fix, format string, args ...any) *ConfigError {
	return &ConfigError{Pool: pool, Field: field, Fix: fix, Problem: fmt.Sprintf(format, args...)}
}

// PoolConfig is one pool of identical guests.
type PoolConfig struct {
	// Name names the pool in guest names, labels, logs and metrics: lower-case letters,
	// digits and '-', at most 24.
	Name string `mapstructure:"name" json:"name" yaml:"name"`
	// Image is an image digest or a unique prefix of one (at least 4 hex digits), as
	// `paddock image ls` shows. It must exist in the store when the pool starts.
	Image string `mapstructure:"image" json:"image" yaml:"image"`
	// VCPUs per guest (default 1).
	VCPUs int `mapstructure:"vcpus" json:"vcpus" yaml:"vcpus"`
	// MemoryMiB per guest; at least RequiredMemoryMiB of the image.
	MemoryMiB int `mapstructure:"memory" json:"memory" yaml:"memory"`
	// MinIdle guests are kept booted and idle (warm).
	MinIdle int `mapstructure:"min_idle" json:"min_idle" yaml:"min_idle"`
	// Max bounds the pool's guests in every state.
	Max int `mapstructure:"max" json:"max" yaml:"max"`
	// IdleTimeout: an idle guest above MinIdle is stopped after being idle this long.
	IdleTimeout time.Duration `mapstructure:"idle_timeout" json:"idle_timeout" yaml:"idle_timeout"`
	// MaxTasksPerVM recycles a guest after it started this many tasks (1: a fresh guest
	// for every task; 0: no limit).
	MaxTasksPerVM int `mapstructure:"max_tasks_per_vm" json:"max_tasks_per_vm" yaml:"max_tasks_per_vm"`
	// TaskTypes the pool scales for; each must be a task type a handler of the image
	// serves (the image manifest records them: `paddock image inspect`). Empty: every
	// task type the image serves.
	TaskTypes []string `mapstructure:"task_types" json:"task_types" yaml:"task_types"`
	// ScratchMiB, when set, gives each guest a copy-on-write scratch disk (vda) of that
	// size, removed with the guest.
	ScratchMiB int `mapstructure:"scratch_mib" json:"scratch_mib,omitempty" yaml:"scratch_mib,omitempty"`
	// BootTimeout bounds create → ready line (default DefaultBootTimeout); a guest that
	// is not ready by then is destroyed and counts as a failed boot.
	BootTimeout time.Duration `mapstructure:"boot_timeout" json:"boot_timeout,omitempty" yaml:"boot_timeout,omitempty"`
	// Cmdline is the guest kernel's command line (default DefaultCmdline).
	Cmdline string `mapstructure:"cmdline" json:"cmdline,omitempty" yaml:"cmdline,omitempty"`
	// TBCacheMiB is each guest's TCG translation-block cache in MiB where guests run
	// under TCG (default DefaultTBCacheMiB; hypervisor.DomainSpec.TBCacheMiB). Bigger
	// retranslates less under load and costs host memory per guest; ignored under KVM.
	TBCacheMiB int `mapstructure:"tb_cache_mib" json:"tb_cache_mib,omitempty" yaml:"tb_cache_mib,omitempty"`
	// WarmStart is how new guests start: WarmCold (boot the kernel, the default) or
	// WarmSnapshot (restore a memory snapshot of a booted template guest, see warm.go
	// and docs/operations.md "Warm start").
	WarmStart string `mapstructure:"warm_start" json:"warm_start,omitempty" yaml:"warm_start,omitempty"`
	// Class is ClassOnline (latency-sensitive work) or ClassBatch (the default). An
	// online pool's guests get OnlineCPUShares of the host's CPU against a batch
	// guest's BatchCPUShares (libvirt cputune shares), and the autoscaler grows online
	// pools first: a batch pool boots no guest for its backlog while an online pool of
	// the host waits for room to grow.
	Class string `mapstructure:"class" json:"class,omitempty" yaml:"class,omitempty"`
}

// Pool classes (PoolConfig.Class).
const (
	ClassOnline = "online"
	ClassBatch  = "batch"
)

// CPU shares of a guest by its pool's class (hypervisor.DomainSpec.CPUShares): an
// online guest gets four times a batch guest's CPU when they compete for the host.
const (
	OnlineCPUShares = 4096
	BatchCPUShares  = 1024
)

// cpuShares is the CPU share of the pool's guests.
func (c PoolConfig) cpuShares() int {
	if c.Class == ClassOnline {
		return OnlineCPUShares
	}
	return BatchCPUShares
}

// Warm start modes (PoolConfig.WarmStart).
const (
	WarmCold     = "cold"
	WarmSnapshot = "snapshot"
)

// Defaults.
const (
	DefaultBootTimeout = 3 * time.Minute
	// DefaultCmdline: the console on the first serial port, quiet; reboot-on-panic at
	// once (the domain's on_reboot destroys it, so a panicked guest goes away and is
	// replaced). no_timer_check: on a loaded host a TCG vCPU is descheduled for long
	// stretches, and the kernel's boot-time IO-APIC timer check then panics ("IO-APIC +
	// timer doesn't work!"; seen here at load 30-45 with the old command line too).
	// For an idle guest's CPU: nowatchdog (no soft-lockup timer every 4 s) and
	// tsc=reliable (the TSC is the clocksource, read in the vDSO, without the
	// clocksource watchdog comparing it against an emulated timer twice a second).
	DefaultCmdline = "console=ttyS0 quiet panic=-1 no_timer_check nowatchdog tsc=reliable"
	// DefaultTBCacheMiB is PoolConfig.TBCacheMiB's default: QEMU's own default is
	// 1 GiB, which an idle TCG guest fills towards over time. Every page of the cache
	// stays in QEMU's RSS once a guest has filled it (a boot does, and a flush does not
	// give pages back), so its size is what it costs: 16 MiB held the same busybox work
	// loop's CPU time as 32 (docs/operations.md), 8 MiB cost about a third more.
	DefaultTBCacheMiB = 16
	// MinMemoryMiB is the least memory any guest gets: a Debian kernel with the agent
	// as PID 1 boots in less, but leaves no room for handlers.
	MinMemoryMiB = 128
	// MaxPoolNameLen bounds pool names (guest names are prefix + pool + "-" + 8 hex
	// digits, at most hypervisor.MaxNameLen).
	MaxPoolNameLen = 24
)

var (
	poolNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	imageRefRE = regexp.MustCompile(`^(sha256:)?[0-9a-f]{4,64}$`)
	taskTypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// withDefaults fills in VCPUs, BootTimeout, Cmdline and TBCacheMiB.
func (c PoolConfig) withDefaults() PoolConfig {
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	if c.Cmdline == "" {
		c.Cmdline = DefaultCmdline
	}
	if c.TBCacheMiB == 0 {
		c.TBCacheMiB = DefaultTBCacheMiB
	}
	if c.WarmStart == "" {
		c.WarmStart = WarmCold
	}
	if c.Class == "" {
		c.Class = ClassBatch
	}
	return c
}

// Validate checks the pool's own fields (nothing that needs the image store or the
// host: the image's existence and memory needs are checked when the pool starts, by
// CheckImage). Errors are *ConfigError naming the pool and the field.
func (c PoolConfig) Validate() error {
	c = c.withDefaults()
	p := c.Name
	switch {
	case c.Name == "":
		return cfgErr("", "name", "give every pool a name such as \"default\"", "a pool has an empty name")
	case len(c.Name) > MaxPoolNameLen || !poolNameRE.MatchString(c.Name):
		return cfgErr(p, "name", fmt.Sprintf("use at most %d lower-case letters, digits and '-'", MaxPoolNameLen), "%q is not a usable pool name", c.Name)
	case c.Image == "":
		return cfgErr(p, "image", "set it to an image digest or a unique prefix of one (see paddock image ls)", "empty")
	case !imageRefRE.MatchString(strings.ToLower(c.Image)):
		return cfgErr(p, "image", "give the digest, or at least its first 4 hex digits (see paddock image ls)", "%q is not an image digest", c.Image)
	case c.VCPUs < 1 || c.VCPUs > hypervisor.MaxVCPUs:
		return cfgErr(p, "vcpus", fmt.Sprintf("use 1 to %d", hypervisor.MaxVCPUs), "%d is out of range", c.VCPUs)
	case c.MemoryMiB < MinMemoryMiB:
		return cfgErr(p, "memory", fmt.Sprintf("give each guest at least %d MiB, e.g. 256", MinMemoryMiB), "%d MiB is below what a guest needs", c.MemoryMiB)
	case c.MinIdle < 0:
		return cfgErr(p, "min_idle", "use 0 or more", "%d is negative", c.MinIdle)
	case c.Max < 1:
		return cfgErr(p, "max", "allow at least 1 guest", "%d", c.Max)
	case c.MinIdle > c.Max:
		return cfgErr(p, "min_idle", "lower min_idle or raise max", "%d is more than max (%d)", c.MinIdle, c.Max)
	case c.IdleTimeout <= 0:
		return cfgErr(p, "idle_timeout", "use a positive duration such as 5m", "%v", c.IdleTimeout)
	case c.MaxTasksPerVM < 0:
		return cfgErr(p, "max_tasks_per_vm", "use 0 (no limit), 1 (a fresh guest per task) or more", "%d is negative", c.MaxTasksPerVM)
	case c.ScratchMiB < 0:
		return cfgErr(p, "scratch_mib", "use 0 (no scratch disk) or a size in MiB", "%d is negative", c.ScratchMiB)
	case c.TBCacheMiB < 0 || c.TBCacheMiB > hypervisor.MaxTBCacheMiB:
		return cfgErr(p, "tb_cache_mib", fmt.Sprintf("use 1 to %d MiB, e.g. %d (0: the default)", hypervisor.MaxTBCacheMiB, DefaultTBCacheMiB), "%d MiB is out of range", c.TBCacheMiB)
	case c.BootTimeout < 0:
		return cfgErr(p, "boot_timeout", "use a positive duration such as 3m", "%v", c.BootTimeout)
	case c.Class != ClassOnline && c.Class != ClassBatch:
		return cfgErr(p, "class", fmt.Sprintf("use %q (latency-sensitive: a larger CPU share, grown first) or %q (the default)", ClassOnline, ClassBatch), "%q is not a pool class", c.Class)
	case c.WarmStart != WarmCold && c.WarmStart != WarmSnapshot:
		return cfgErr(p, "warm_start", fmt.Sprintf("use %q (boot every guest) or %q (restore guests from a memory snapshot of a booted template)", WarmCold, WarmSnapshot), "%q is not a warm start mode", c.WarmStart)
	}
	seen := map[string]bool{}
	for i, tt := range c.TaskTypes {
		f := fmt.Sprintf("task_types[%d]", i)
		if !taskTypeRE.MatchString(tt) {
			return cfgErr(p, f, "use a task type name: lower-case letters, digits, '.', '_' or '-'", "%q is not a task type", tt)
		}
		if seen[tt] {
			return cfgErr(p, f, "list each task type once", "%q is listed twice", tt)
		}
		seen[tt] = true
	}
	return nil
}

// RequiredMemoryMiB is the memory a guest of img needs, derived from the image: the
// initramfs is unpacked into RAM (rootfs), so a guest holds the compressed archive
// while unpacking plus every unpacked file (agent, modules, handlers, as the manifest
// lists them), on top of a fixed 96 MiB for the kernel, page cache and the agent's
// heap; never below MinMemoryMiB. For the host-kernel image with the example handlers
// that is the 128 MiB floor; large handler binaries raise it.
func RequiredMemoryMiB(img images.Image) int {
	var unpacked int64
	m := img.Manifest
	unpacked += m.Agent.Size + m.Config.Size
	for _, mod := range m.Modules {
		unpacked += mod.Size
	}
	for _, h := range m.Handlers {
		unpacked += h.Size
	}
	var compressed int64
	if m.Initramfs != nil {
		compressed = m.Initramfs.Size
	}
	need := 96 + int((unpacked+compressed+(1<<20)-1)>>20)
	return max(need, MinMemoryMiB)
}

// CheckImage checks the pool against its resolved image: enough memory, an image whose
// manifest records the task types its handlers serve (schema 2 on), and every listed
// task type served by one of its handlers. It returns the task types the pool scales
// for: its task_types, or every type the image serves when it lists none.
func (c PoolConfig) CheckImage(img images.Image) ([]string, error) {
	if need := RequiredMemoryMiB(img); c.MemoryMiB < need {
		return nil, cfgErr(c.Name, "memory", fmt.Sprintf("give the pool at least %d MiB", need),
			"%d MiB is below what image %.12s needs (%d MiB: its initramfs is unpacked into guest RAM)", c.MemoryMiB, img.Digest, need)
	}
	m := img.Manifest
	rebuild := "rebuild the image with this version of paddock (paddock image build with the same handlers) and set the pool's image to the new digest"
	if m.Schema < 2 {
		return nil, cfgErr(c.Name, "image", rebuild,
			"image %.12s has manifest schema %d, which does not record the task types its handlers serve", img.Digest, m.Schema)
	}
	var handlers []string
	for _, h := range m.Handlers {
		if len(h.Types) == 0 {
			return nil, cfgErr(c.Name, "image", rebuild, "image %.12s: its manifest records no task types for handler %q", img.Digest, h.Name)
		}
		handlers = append(handlers, h.Name)
	}
	all := m.TaskTypes()
	if len(c.TaskTypes) == 0 {
		return all, nil
	}
	served := "none"
	if len(all) > 0 {
		served = strings.Join(all, ", ")
	}
	for i, tt := range c.TaskTypes {
		if _, ok := m.HandlerFor(tt); ok {
			continue
		}
		problem := fmt.Sprintf("no handler of image %.12s serves task type %q", img.Digest, tt)
		if slices.Contains(handlers, tt) {
			problem += fmt.Sprintf(" (%q is the name of a handler, not a task type)", tt)
		}
		return nil, cfgErr(c.Name, fmt.Sprintf("task_types[%d]", i),
			fmt.Sprintf("use task types the image serves (%s), or build an image with a handler serving %q", served, tt), "%s", problem)
	}
	return c.TaskTypes, nil
}

// Config is the host daemon's pool configuration.
type Config struct {
	// HostID names this host; every guest carries it as a label (LabelHost), and at
	// start the Manager destroys the guests a previous run with the same HostID left.
	HostID string `mapstructure:"host_id" json:"host_id" yaml:"host_id"`
	// RunDir holds one directory per guest (socket, console log, scratch disk). It is
	// made 0755: QEMU runs as its own user and must reach it. Keep it short: unix
	// socket paths are limited to 107 bytes.
	RunDir string       `mapstructure:"run_dir" json:"run_dir" yaml:"run_dir"`
	Pools  []PoolConfig `mapstructure:"pools" json:"pools" yaml:"pools"`
	// Tick is the reconcile interval (default 1s); hypervisor events and task
	// starts/ends also wake the loop at once.
	Tick time.Duration `mapstructure:"tick" json:"tick,omitempty" yaml:"tick,omitempty"`
	// StatsInterval is how often per-guest libvirt statistics are read (default 5s).
	StatsInterval time.Duration `mapstructure:"stats_interval" json:"stats_interval,omitempty" yaml:"stats_interval,omitempty"`
	// Thresholds stop scale-up while the host is above them.
	Thresholds hostload.Thresholds `mapstructure:"thresholds" json:"thresholds" yaml:"thresholds"`
	// BootBackoff is the wait after a failed boot, doubled for every further
	// consecutive failure up to MaxBootBackoff (defaults 1s and 1m).
	BootBackoff    time.Duration `mapstructure:"boot_backoff" json:"boot_backoff,omitempty" yaml:"boot_backoff,omitempty"`
	MaxBootBackoff time.Duration `mapstructure:"max_boot_backoff" json:"max_boot_backoff,omitempty" yaml:"max_boot_backoff,omitempty"`
	// RetryInterval is how often a pool that could not start (its image missing, …)
	// tries again (default 30s).
	RetryInterval time.Duration `mapstructure:"retry_interval" json:"retry_interval,omitempty" yaml:"retry_interval,omitempty"`
	// DisableShares turns off the shared directories: guests get no input and output
	// share (GuestRef.InDir and OutDir are empty) and the host daemon does not offer to
	// stage blobs. Default false: every guest has both (docs/dataplane.md).
	DisableShares bool `mapstructure:"disable_shares" json:"disable_shares,omitempty" yaml:"disable_shares,omitempty"`
	// ShareUser owns every guest's output share: the user QEMU runs as (default
	// DefaultShareUser, libvirt-qemu). When it does not exist, or the daemon is not
	// root, the output share is made 0777 instead (logged).
	ShareUser string `mapstructure:"share_user" json:"share_user,omitempty" yaml:"share_user,omitempty"`
	// GuestSessionTimeout (host.guest_session_timeout) bounds how long a ready guest's
	// agent may go without a session through the relay: none within it of the ready
	// line, or none for it since the last one closed while the domain still runs (the
	// agent is dead or hung inside a live guest). Such a guest is destroyed, reported
	// gone (the server requeues its tasks) and replaced; one that never started a task
	// counts as a failed boot. Default DefaultGuestSessionTimeout (1m); enforced only
	// with a relay that reports sessions (SessionReporter: the host daemon's).
	GuestSessionTimeout time.Duration `mapstructure:"guest_session_timeout" json:"guest_session_timeout,omitempty" yaml:"guest_session_timeout,omitempty"`
	// SnapshotDir holds the memory snapshots of pools with warm_start snapshot, one
	// directory per pool (default run_dir/.snapshots). A snapshot is as large as the
	// memory its template guest touched; put it on a disk, not a small tmpfs.
	SnapshotDir string `mapstructure:"snapshot_dir" json:"snapshot_dir,omitempty" yaml:"snapshot_dir,omitempty"`
	// MaxConcurrentStarts (host.max_concurrent_starts) bounds the guests this host
	// starts at once, over all its pools: a start runs from creating or restoring the
	// domain (or booting a pool's snapshot template) to its ready line (or the snapshot
	// saved, or a failure). Guests the pools want beyond it wait, counted as booting,
	// and start in turn. Default DefaultMaxConcurrentStarts.
	MaxConcurrentStarts int `mapstructure:"max_concurrent_starts" json:"max_concurrent_starts,omitempty" yaml:"max_concurrent_starts,omitempty"`
}

// StatsEvery is StatsInterval with its default applied.
func (c Config) StatsEvery() time.Duration { return c.withDefaults().StatsInterval }

func (c Config) withDefaults() Config {
	if c.Tick == 0 {
		c.Tick = time.Second
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = 5 * time.Second
	}
	if c.BootBackoff == 0 {
		c.BootBackoff = time.Second
	}
	if c.MaxBootBackoff == 0 {
		c.MaxBootBackoff = time.Minute
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 30 * time.Second
	}
	if c.ShareUser == "" {
		c.ShareUser = DefaultShareUser
	}
	if c.GuestSessionTimeout == 0 {
		c.GuestSessionTimeout = DefaultGuestSessionTimeout
	}
	if c.MaxConcurrentStarts == 0 {
		c.MaxConcurrentStarts = DefaultMaxConcurrentStarts
	}
	if c.SnapshotDir == "" && c.RunDir != "" {
		c.SnapshotDir = filepath.Join(c.RunDir, ".snapshots")
	}
	return c
}

var hostIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateHost checks the host-wide settings (not the pools): New refuses a Config
// that fails it.
func (c Config) ValidateHost() error {
	c = c.withDefaults()
	if !hostIDRE.MatchString(c.HostID) {
		return cfgErr("", "host_id", "use up to 64 letters, digits, '.', '_' or '-', e.g. the host name", "%q is not a host id", c.HostID)
	}
	if c.RunDir == "" || !filepath.IsAbs(c.RunDir) {
		return cfgErr("", "run_dir", "use an absolute directory such as /run/paddock/vms", "%q is not an absolute path", c.RunDir)
	}
	if n := len(c.RunDir) + len("/paddock-x-12345678/") + len(socketName); n > hypervisor.MaxSocketLen {
		return cfgErr("", "run_dir", "use a shorter directory such as /run/paddock/vms",
			"%q is too long: guest sockets under it would exceed the %d-byte unix socket limit", c.RunDir, hypervisor.MaxSocketLen)
	}
	if !filepath.IsAbs(c.SnapshotDir) {
		return cfgErr("", "snapshot_dir", "use an absolute directory such as /var/lib/paddock/snapshots, or leave it empty for run_dir/.snapshots", "%q is not an absolute path", c.SnapshotDir)
	}
	for _, d := range []struct {
		f string
		v time.Duration
	}{{"tick", c.Tick}, {"stats_interval", c.StatsInterval}, {"boot_backoff", c.BootBackoff}, {"max_boot_backoff", c.MaxBootBackoff}, {"retry_interval", c.RetryInterval}} {
		if d.v < 0 {
			return cfgErr("", d.f, "use a positive duration", "%v", d.v)
		}
	}
	if c.GuestSessionTimeout < MinGuestSessionTimeout {
		return cfgErr("", "guest_session_timeout", fmt.Sprintf("use at least %v, e.g. 1m (a live agent redials its session at least every 5s)", MinGuestSessionTimeout),
			"%v is too short", c.GuestSessionTimeout)
	}
	if c.MaxConcurrentStarts < 1 {
		return cfgErr("", "max_concurrent_starts", fmt.Sprintf("use 1 or more, e.g. %d (leave it out for the default)", DefaultMaxConcurrentStarts),
			"%d is below 1: the host could start no guest", c.MaxConcurrentStarts)
	}
	if err := c.Thresholds.Validate(); err != nil {
		return &ConfigError{Field: "thresholds", Problem: err.Error()}
	}
	return nil
}

// Validate checks the host-wide settings and every pool (duplicate names included),
// returning all the errors joined. The Manager itself runs the good pools and reports
// the bad ones; Validate is for `--check`-style callers that want every error at once.
func (c Config) Validate() error {
	var errs []error
	if err := c.ValidateHost(); err != nil {
		errs = append(errs, err)
	}
	seen := map[string]bool{}
	for _, p := range c.Pools {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[p.Name] {
			errs = append(errs, cfgErr(p.Name, "name", "give each pool its own name", "two pools are named %q", p.Name))
		}
		seen[p.Name] = true
	}
	return errors.Join(errs...)
}
