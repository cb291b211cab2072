package store

import (
	"errors"
	"time"
)

// State is a task's state.
type State string

// The states. Waiting, Queued, Leased and Running are live; the others are terminal.
const (
	Waiting   State = "waiting" // waits for its upstream tasks (Task.Upstreams) to succeed
	Queued    State = "queued"
	Leased    State = "leased"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
	Dead      State = "dead"
)

// States lists every state in lifecycle order.
var States = []State{Waiting, Queued, Leased, Running, Succeeded, Failed, Cancelled, Dead}

// Terminal reports whether s is final: nothing changes a task in a terminal state.
func (s State) Terminal() bool {
	switch s {
	case Succeeded, Failed, Cancelled, Dead:
		return true
	}
	return false
}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Class is a task's service class.
type Class string

// The classes.
const (
	Online Class = "online"
	Batch  Class = "batch"
)

// Requirements are matched against what agents offer.
type Requirements struct {
	CPUMillis   int64             `json:"cpu_millis,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Usage is what an attempt cost, and where it ran.
type Usage struct {
	Wall time.Duration
	CPU  time.Duration
	// MemoryBytes is the memory of the agent (its guest) that ran the attempt, as the
	// agent offered it at registration (0 when unknown).
	MemoryBytes int64
	// BytesIn and BytesOut are the data-plane bytes the attempt moved: its input blobs
	// fetched, its output blobs written (inline payloads and outputs not counted).
	BytesIn, BytesOut int64
	// Host is the host that ran it: the host id a host daemon attested for a guest's
	// agent, else the host name the agent gave.
	Host string
}

// Task is one task as stored.
type Task struct {
	ID         string
	Seq        int64 // submission order, set by the store
	Type       string
	Payload    []byte
	Inputs     map[string][]byte
	InputBlobs map[string]BlobRef // inputs in the blob store, by name (names shared with Inputs)
	// Upstreams are inputs that other tasks' outputs will fill, by input name (names shared
	// with Inputs and InputBlobs). A task created with upstreams is Waiting; when they all
	// succeeded it is Queued with their output blobs added to InputBlobs.
	Upstreams      map[string]Upstream
	Priority       int
	Class          Class
	Requirements   Requirements
	Timeout        time.Duration // per attempt; 0: none
	MaxAttempts    int
	IdempotencyKey string // "" : none
	Tenant         string
	// ScheduleDeadline is when a task still queued and never started ends FAILED with
	// kind ScheduleTimeout (its creation plus its schedule-to-start timeout); zero: never.
	ScheduleDeadline time.Time

	State           State
	Attempt         int    // number of the current or last attempt; 0 before the first
	Preemptions     int    // attempts ended by a preemption: not charged against MaxAttempts
	LeaseID         uint64 // fencing token of the current or last lease; grows with every lease
	AgentID         string // agent of the current or last lease
	LeaseSecret     string // random secret of the current or last lease (Grant.Secret)
	LeaseExpiresAt  time.Time
	NotBefore       time.Time // a queued task is not dispatched before this (retry backoff)
	CancelRequested bool

	Output       []byte
	Outputs      map[string][]byte
	OutputSHA256 string
	OutputBlobs  map[string]BlobRef // outputs in the blob store, by name; set on success
	Error        string
	// FailureKind is how a task that failed without an attempt failed (ScheduleTimeout,
	// UpstreamFailed); "" otherwise (an attempt's kind is in its Attempt).
	FailureKind FailureKind

	CreatedAt  time.Time
	UpdatedAt  time.Time
	LeasedAt   time.Time // start of the current or last lease
	StartedAt  time.Time // when the agent acknowledged the current or last lease
	FinishedAt time.Time
}

// Upstream names one output of another task: Output "" is the task's only output
// blob (an error when it has none or several).
type Upstream struct {
	TaskID string `json:"task"`
	Output string `json:"output,omitempty"`
}

// BlobRef names one blob of the blob store: its digest ("sha256:<hex>") and size in bytes.
type BlobRef struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// FailureKind is what kind of failure ended an attempt, as data (never parsed out of
// Error). The agent sets the kinds of failures it sees (api/agent/v1 FailureKind); the
// server sets the rest (a lease that expired, a guest gone, a refusal).
type FailureKind string

// The failure kinds. NoFailure is an attempt that runs or succeeded (or one recorded
// before kinds were).
const (
	NoFailure          FailureKind = ""
	HandlerError       FailureKind = "handler_error"       // the handler's code returned an error
	Crashed            FailureKind = "crashed"             // the handler process exited or was killed during the call
	Timeout            FailureKind = "timeout"             // the task's deadline passed
	Panic              FailureKind = "panic"               // the handler panicked in its Handle call
	OutputTooLarge     FailureKind = "output_too_large"    // the outputs exceeded a limit; never retried
	BadOutput          FailureKind = "bad_output"          // the outputs were malformed (files not as reported, checksum mismatch)
	HandlerUnavailable FailureKind = "handler_unavailable" // no handler process could take the task
	InputUnavailable   FailureKind = "input_unavailable"   // the input blobs could not be staged or fetched
	OutputTransfer     FailureKind = "output_transfer"     // the output files could not be stored or collected
	CancelledRun       FailureKind = "cancelled"           // stopped on the agent (a client's cancel, agent shutdown)
	LeaseExpired       FailureKind = "lease_expired"       // the lease ended without a report
	GuestGone          FailureKind = "guest_gone"          // the guest running it was destroyed or died
	Refused            FailureKind = "refused"             // the agent refused the assignment
	ScheduleTimeout    FailureKind = "schedule_timeout"    // no agent started it within its schedule-to-start timeout
	Preempted          FailureKind = "preempted"           // stopped to give its slot to an online task; not charged
	UpstreamFailed     FailureKind = "upstream_failed"     // a pipeline task's upstream ended failed, dead or cancelled, is gone, or lacks the output
)

// FailureKinds lists every kind but NoFailure.
var FailureKinds = []FailureKind{HandlerError, Crashed, Timeout, Panic, OutputTooLarge, BadOutput, HandlerUnavailable,
	InputUnavailable, OutputTransfer, CancelledRun, LeaseExpired, GuestGone, Refused, ScheduleTimeout, Preempted, UpstreamFailed}

// Attempt is one run of a task: one lease.
type Attempt struct {
	TaskID      string
	Number      int
	LeaseID     uint64
	AgentID     string
	State       State // Running while live; then how it ended (Queued: it will be retried)
	Error       string
	Retryable   bool
	FailureKind FailureKind // what kind of failure ended it; NoFailure while it runs and on success
	Usage       Usage
	SHA256      string
	LeasedAt    time.Time
	FinishedAt  time.Time
}

// Errors of the store; backends wrap them.
var (
	// ErrNotFound: no task with that id.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the task was not in the expected state or lease (a compare-and-swap lost).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request is malformed (an illegal transition, a missing field).
	ErrInvalid = errors.New("invalid")
)
