package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/plugins/internal/contract"
)

// Version is the version of this SDK, reported to the agent by Describe. From
// version 2 on the SDK ends the log lines of a call that logged with a line keyed
// LogKeyCallEnd (HandleResponse.log_end).
const Version = "2"

// ProtocolVersion is the version of the handler protocol (plugins/proto) this SDK speaks.
const ProtocolVersion = contract.ProtocolVersion

// Handler is implemented by a task handler. Handle is called concurrently, from
// many goroutines at once; it must return promptly once ctx is done (the agent
// kills and restarts a handler that keeps running past the task's deadline plus
// a grace period).
type Handler interface {
	// Describe returns the task types this handler serves. It is called once
	// per process start and must return at least one type.
	Describe() []TaskType
	// Handle runs one task. Return an error made with Retryable or Fatal to say
	// whether running the task again can help; see Retryable for the default.
	Handle(ctx context.Context, req Request) (Response, error)
}

// TaskType describes one type of task a handler serves.
type TaskType struct {
	// Name clients submit tasks under, e.g. "checksum.sha256". Required.
	Name string
	// Version of the implementation, e.g. "1.0.0". Required.
	Version string
	// Concurrency is the suggested number of tasks of this type to run at once
	// in one agent (0: no suggestion).
	Concurrency int
	// Description is one line for operators.
	Description string
}

// Request is one task. Its inputs come inline (Inputs, small) or as files
// (Files, any size); Input opens either kind by name. Its outputs go back inline
// (Response.Output, Outputs) or as files in OutputDir (CreateOutput).
type Request struct {
	// Type is the task type, one of the names Describe returned.
	Type string
	// Payload is the task's arguments, opaque to Paddock (often JSON).
	Payload []byte
	// Inputs are named inputs that came inline in the call (small ones).
	Inputs map[string][]byte
	// Files are named inputs of any size handed over as files. Input names are
	// unique across Inputs and Files.
	Files map[string]File
	// OutputDir is the directory where this task's output files go, one file per
	// output name (see CreateOutput); empty when the agent offers none. Every
	// regular file in it when Handle returns is an output.
	OutputDir string
	// MaxOutputBytes bounds the task's outputs, inline and files together; 0: no
	// limit. CreateOutput's writers enforce it as they write.
	MaxOutputBytes int64
	// TaskID is the scheduler's id of the task, for logs.
	TaskID string
	// Attempt is 1 on the first run of the task, 2 on the first retry, ...
	Attempt int
	// Deadline is when the task must be done (zero: none). ctx carries it too.
	Deadline time.Time

	call *call // the SDK's state for this call; nil in a Request built by hand
}

// Response is the result of one task.
type Response struct {
	// Output is the task's main result.
	Output []byte
	// Outputs are further named results (optional).
	Outputs map[string][]byte
}

// Error is a task failure that says whether a retry can help. Make one with
// Retryable, Fatal, Retryablef or Fatalf.
type Error struct {
	Err       error
	Retryable bool
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "unknown error"
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable marks err as transient: running the task again may succeed.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Retryable: true}
}

// Fatal marks err as permanent: running the task again will fail the same way
// (bad input, unsupported request).
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err, Retryable: false}
}

// Retryablef is Retryable(fmt.Errorf(format, args...)).
func Retryablef(format string, args ...any) error {
	return Retryable(fmt.Errorf(format, args...))
}

// Fatalf is Fatal(fmt.Errorf(format, args...)).
func Fatalf(format string, args ...any) error { return Fatal(fmt.Errorf(format, args...)) }

// IsRetryable reports whether err says a retry can help. An *Error anywhere in
// err's chain decides; otherwise context.DeadlineExceeded and context.Canceled
// are retryable and every other error is fatal.
func IsRetryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
