package hypervisor

import (
	"context"
	"time"
)

// Hypervisor is what callers (vmpool) need from a host's hypervisor. Every method refuses
// a name without the configured prefix with a *FieldError (ErrInvalid) before touching
// the hypervisor, and List, Events and Stats only ever report domains with the prefix.
// *Libvirt implements it; hypervisortest.Fake is an in-memory stand-in for unit tests.
type Hypervisor interface {
	// Prefix is the name prefix of every domain this Hypervisor manages.
	Prefix() string
	// Create validates spec and starts a transient domain. A name in use is ErrConflict.
	Create(ctx context.Context, spec DomainSpec) (Domain, error)
	// Shutdown asks the guest to power off (ACPI power button) and destroys the domain if
	// it is still running after timeout. It returns once the domain is gone or ctx ends.
	Shutdown(ctx context.Context, name string, timeout time.Duration) error
	// Destroy stops the domain at once (like pulling the plug). ErrNotFound if absent.
	Destroy(ctx context.Context, name string) error
	// Lookup returns the domain; ErrNotFound if there is none with that name.
	Lookup(ctx context.Context, name string) (Domain, error)
	// List returns every domain whose name carries the prefix, sorted by name.
	List(ctx context.Context) ([]Domain, error)
	// Events subscribes to lifecycle events of prefixed domains. The channel is closed
	// when ctx ends or the Hypervisor is closed. A subscriber that falls more than
	// EventBuffer events behind loses events (logged); reconcile with List after that.
	Events(ctx context.Context) (<-chan Event, error)
	// Stats returns statistics of the running domains named (all running prefixed
	// domains when names is empty). A named domain that is not running is ErrNotFound.
	Stats(ctx context.Context, names ...string) ([]DomainStats, error)
	// CPUTimes returns the CPU time used so far by every running prefixed domain, by
	// name. Unlike Stats it asks nothing of the guests' QEMU processes, so it answers in
	// time when they are starved of CPU, which is when a caller most needs to know
	// whether a silent guest still runs. On the local qemu:///system it reads each
	// QEMU's /proc/<pid>/stat (its pid file in /run/libvirt/qemu) and takes no libvirt
	// domain lock: a domain being restored held its lock, and so every domain's figure,
	// for over a minute under load (proccpu.go). Elsewhere libvirt's statistics.
	CPUTimes(ctx context.Context) (map[string]time.Duration, error)
}

// EventBuffer is the per-subscriber event channel capacity.
const EventBuffer = 256

// State is a domain's run state.
type State string

const (
	StateRunning     State = "running"
	StateBlocked     State = "blocked"
	StatePaused      State = "paused"
	StateShuttingOff State = "shutdown" // the guest is shutting down
	StateShutoff     State = "shutoff"
	StateCrashed     State = "crashed"
	StateSuspended   State = "pmsuspended"
	StateUnknown     State = "unknown"
)

// Domain is a guest as the hypervisor sees it.
type Domain struct {
	Name   string
	UUID   string
	State  State
	Labels map[string]string
}

// EventType is a lifecycle event kind (libvirt's VIR_DOMAIN_EVENT_*).
type EventType string

const (
	EventDefined   EventType = "defined"
	EventUndefined EventType = "undefined"
	EventStarted   EventType = "started"
	EventSuspended EventType = "suspended"
	EventResumed   EventType = "resumed"
	// EventStopped: the domain is no longer running. Detail says why: "shutdown",
	// "destroyed", "crashed", "failed", "migrated", "saved", …
	EventStopped EventType = "stopped"
	// EventShutdown: the guest has begun or finished shutting itself down.
	EventShutdown    EventType = "shutdown"
	EventPMSuspended EventType = "pmsuspended"
	EventCrashed     EventType = "crashed"
	EventOther       EventType = "other"
)

// Event is one lifecycle event of a domain whose name carries the prefix.
type Event struct {
	Domain string
	Type   EventType
	Detail string
	Time   time.Time // when this process received it
}

// DomainStats is one domain's statistics (libvirt's GetAllDomainStats). Counters are
// cumulative since the domain started.
type DomainStats struct {
	Name  string
	State State
	// CPUTime is the total CPU time the domain used (all vCPUs and QEMU's threads).
	CPUTime   time.Duration
	CPUUser   time.Duration
	CPUSystem time.Duration
	Balloon   BalloonStats
	VCPUs     VCPUStats
	Blocks    []BlockStats
}

// BalloonStats are memory figures in KiB; a zero field is one libvirt did not report
// (guest-side figures need the guest's virtio_balloon driver).
type BalloonStats struct {
	CurrentKiB   uint64 // memory the guest currently has
	MaximumKiB   uint64
	AvailableKiB uint64 // as seen by the guest
	UsableKiB    uint64
	UnusedKiB    uint64
	RSSKiB       uint64 // resident set size of the QEMU process
}

// VCPUStats counts vCPUs and their time.
type VCPUStats struct {
	Current int
	Maximum int
	Time    []time.Duration // per vCPU
}

// BlockStats is one disk's I/O.
type BlockStats struct {
	Name    string // target, e.g. "vda"
	Path    string
	RdBytes uint64
	WrBytes uint64
	RdReqs  uint64
	WrReqs  uint64
}
