package store

import (
	"context"
	"time"
)

// Store is the scheduler's durable state. Implementations are safe for concurrent use.
// Every method that changes a task is atomic and durable when it returns. List, Ready,
// Expired and Live return tasks without payload, inputs, outputs or blob references
// (but Ready returns the input blob references, for placement near them).
type Store interface {
	// Create stores t in InitialState(t): Queued, or Waiting when it has upstreams
	// (t.ID, t.Tenant and the defaults must be filled in).
	// When t.IdempotencyKey is set and the tenant already has a task with that key, it
	// returns that task and created=false instead.
	Create(ctx context.Context, t Task) (stored Task, created bool, err error)
	// CreateBatch is Create for many tasks in one transaction: all are stored (or
	// found by their idempotency keys) or, on error, none. It returns the stored tasks
	// and whether each was created, in the order of ts.
	CreateBatch(ctx context.Context, ts []Task) (stored []Task, created []bool, err error)
	// CreateLease is Create and, in the same transaction and only if t was created,
	// Lease of t under g (g.TaskID must be t.ID): a task submitted while a slot is free
	// is stored and leased in one commit. It returns the task as leased. When t's
	// idempotency key is taken it returns the task holding it, created=false, and
	// leases nothing. A task that would be created Waiting (with upstreams) is refused
	// (ErrInvalid).
	CreateLease(ctx context.Context, t Task, now time.Time, g Grant) (stored Task, created bool, err error)
	// Get returns a task, or an error wrapping ErrNotFound.
	Get(ctx context.Context, id string) (Task, error)
	// Attempts returns a task's attempts, oldest first.
	Attempts(ctx context.Context, id string) ([]Attempt, error)
	// List returns tasks matching f, newest first, and the token of the next page ("" on
	// the last). Listed tasks carry no payload, inputs or outputs.
	List(ctx context.Context, f Filter) ([]Task, string, error)
	// Ready returns up to limit Queued tasks of type typ whose NotBefore is not after
	// now: online tasks before batch ones (Class), and within a class higher priority
	// first, then in submission order.
	Ready(ctx context.Context, typ string, now time.Time, limit int) ([]Task, error)
	// ReadyOnline is Ready for the online tasks alone (the first ones Ready returns):
	// whether online tasks wait, and which, without reading a batch task.
	ReadyOnline(ctx context.Context, typ string, now time.Time, limit int) ([]Task, error)
	// ReadyStats measures the ready queues (Queued tasks whose NotBefore is not after
	// now) of the given types in one read: for each type with a task ready, how many
	// are ready and the earliest time one of them became ready (the later of its
	// CreatedAt and NotBefore). It looks at the first limit ready tasks of each type
	// only (by priority, then submission), so its cost is bounded whatever the backlog:
	// N is at most limit. Types with nothing ready are left out.
	ReadyStats(ctx context.Context, types []string, now time.Time, limit int) ([]ReadyStat, error)
	// Lease moves each granted task from Queued to Leased under a new lease id (one more
	// than its last), starts its next attempt, and returns the tasks leased. A grant
	// whose task is no longer Queued is skipped.
	Lease(ctx context.Context, now time.Time, grants []Grant) ([]Task, error)
	// Update applies u as a compare-and-swap: only if the task is in one of u.From (and,
	// when u.LeaseID is not 0, holds that lease). It returns the updated task, or an
	// error wrapping ErrConflict (with the task as it is) when the swap lost.
	Update(ctx context.Context, u Update) (Task, error)
	// UpdateLease applies u as Update does and then, in the same transaction and only
	// if u applied, leases the grants as Lease does: one commit for a change that frees
	// a slot and the lease that fills it (a batch task preempted and the online task its
	// slot is handed to). When u's swap loses it returns an error wrapping ErrConflict
	// (with the task as it is) and leases nothing. A grant whose task is no longer
	// Queued is skipped, as in Lease, and u still applies. A grant naming u.TaskID is
	// refused (ErrInvalid).
	UpdateLease(ctx context.Context, u Update, now time.Time, grants []Grant) (Task, []Task, error)
	// Renew sets the lease expiry of each given live lease held by agentID to expires.
	// It returns how many leases were renewed; stale ones are ignored.
	Renew(ctx context.Context, agentID string, leases []LeaseRef, expires time.Time) (int, error)
	// Expired returns up to limit Leased or Running tasks whose lease expired before now.
	Expired(ctx context.Context, now time.Time, limit int) ([]Task, error)
	// ScheduleExpired returns up to limit Queued tasks never started (Attempt 0) whose
	// ScheduleDeadline is set and not after now (payloads omitted).
	ScheduleExpired(ctx context.Context, now time.Time, limit int) ([]Task, error)
	// List with Filter.State Waiting returns the waiting tasks with their Upstreams
	// (List returns Upstreams for every task).
	// Live returns every Leased or Running task (payloads omitted): the server reloads
	// them at start to rebuild its view of the agents' work.
	Live(ctx context.Context) ([]Task, error)
	// BlobInUse reports whether a task still needs the blob with this digest: a live
	// (Queued, Leased or Running) task names it in InputBlobs, or a task that finished
	// after since names it in InputBlobs or OutputBlobs. Retention deletes a blob only
	// when it is not in use.
	BlobInUse(ctx context.Context, digest string, since time.Time) (bool, error)
	// TouchBlobs records that the blobs with these digests were referenced at (a submit
	// naming them, a client finding or uploading them): BlobInUse reports a blob in use
	// while its last reference is after since, so retention cannot delete a blob a
	// client was just told exists before the task naming it is stored.
	TouchBlobs(ctx context.Context, digests []string, at time.Time) error
	// LogStore keeps the handlers' logs of each attempt.
	LogStore
	// TenantStore keeps client tokens and the per-tenant counts and usage.
	TenantStore
	// BlobGrants says which tenants may read which blobs.
	BlobGrants
	// Counts counts the live (Waiting, Queued, Leased and Running) tasks by type and state.
	// Finished tasks are not counted: their number only grows until retention deletes
	// them, and counting them would read the whole table.
	Counts(ctx context.Context) ([]Count, error)
	// DeleteFinished deletes up to limit tasks in the terminal state st that finished
	// before before, with their attempts, blob references and logs, and returns how many it
	// deleted (retention). It refuses a state that is not terminal.
	DeleteFinished(ctx context.Context, st State, before time.Time, limit int) (int, error)
	// Describe names the store for operators ("sqlite:/var/lib/paddock/paddock.db").
	Describe() string
	// Close releases the store.
	Close() error
}

// InitialState is the state Create stores t in: Waiting when t has upstreams, else Queued.
func InitialState(t Task) State {
	if len(t.Upstreams) > 0 {
		return Waiting
	}
	return Queued
}

// ReadyStat is the measured ready queue of one task type (ReadyStats).
type ReadyStat struct {
	Type string
	// N is how many tasks of the type are ready (at most the limit asked).
	N int64
	// Oldest is the earliest time one of the tasks counted became ready.
	Oldest time.Time
}

// Grant leases one task to one agent.
type Grant struct {
	TaskID    string
	AgentID   string
	ExpiresAt time.Time
	// Secret is the new lease's random secret (Task.LeaseSecret).
	Secret string
}

// LeaseRef names one lease.
type LeaseRef struct {
	TaskID  string
	LeaseID uint64
}

// Update is one compare-and-swap change of a task, with the end of its current
// attempt when EndAttempt is set.
type Update struct {
	TaskID  string
	From    []State // the task must be in one of these states
	LeaseID uint64  // when not 0, the task must hold this lease
	To      State
	Now     time.Time

	// Fields set when not nil / zero.
	Output          *[]byte
	Outputs         map[string][]byte
	OutputSHA256    string
	OutputBlobs     map[string]BlobRef // replaces the task's output blobs (on success)
	InputBlobs      map[string]BlobRef // replaces the task's input blobs (a waiting task's upstreams resolved)
	Inputs          map[string][]byte  // replaces the task's inline inputs (a waiting task's upstreams' inline outputs)
	Error           *string
	NotBefore       time.Time
	CancelRequested bool      // set the flag
	Started         bool      // set StartedAt = StartedAt if set, else Now
	StartedAt       time.Time // with Started: when the attempt started, if before Now (a start recorded late)
	LeaseExpiresAt  time.Time
	Preempted       bool // count one more preemption (the attempt ended is not charged)

	// EndAttempt records the current attempt's outcome (State = To, Error, Retryable,
	// FailureKind, Usage, SHA256). Without EndAttempt, a FailureKind is the task's own
	// (Task.FailureKind: a failure without an attempt).
	EndAttempt  bool
	Retryable   bool
	FailureKind FailureKind
	Usage       Usage
}

// Filter selects tasks for List. Zero fields match anything.
type Filter struct {
	State     State
	Type      string
	Tenant    string
	Class     Class
	Limit     int    // 0: 100
	PageToken string // from the previous page
}

// Count is the number of tasks of one type in one state.
type Count struct {
	Type  string
	State State
	N     int64
}

// Shared is implemented by stores that several servers (replicas) may share, as the
// PostgreSQL store. A server over a Shared store keeps nothing in memory that another
// replica must see: it learns of other replicas' changes from Wakeups, and from slow
// polls of the store for what a wake-up may have missed.
type Shared interface {
	// Wakeups delivers, until ctx ends, changes any server made that others act on:
	// a task queued (its type), a cancel requested for a leased or running task. It
	// returns nil when the store sends none (the servers then rely on their polls).
	// Wake-ups may be dropped; Missed says some were.
	Wakeups(ctx context.Context) <-chan Wakeup
}

// Wakeup is one change made by some server of a Shared store.
type Wakeup struct {
	// Type is set when a task of this type was queued (created or requeued).
	Type string
	// Cancel is set to a task's id when a cancel was requested while it was leased or
	// running: the server holding its agent's session forwards the cancel.
	Cancel string
	// Missed is set when wake-ups may have been lost (the store's listening connection
	// was re-established): look at everything.
	Missed bool
}
