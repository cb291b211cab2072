package contract

import (
	"errors"
	"fmt"
)

// ProtocolVersion is the version of the handler protocol (plugins/proto); it is
// also the go-plugin application protocol version of the handshake.
const ProtocolVersion = 1

// The go-plugin magic cookie: a handler started without it in its environment
// says it is a plugin and exits.
const (
	MagicCookieKey   = "PADDOCK_HANDLER_PLUGIN"
	MagicCookieValue = "2f1c6a0e-paddock-task-handler"
)

// MaxMessageBytes is the largest gRPC message either side accepts.
const MaxMessageBytes = 256 << 20

// Keys the SDK adds to a log record so the agent can file it under its task.
const (
	LogKeyTask    = "paddock_task"
	LogKeyAttempt = "paddock_attempt"
	LogKeyCallEnd = "paddock_call_end"
)

// TaskType is what ValidateTypes checks of one type a handler serves.
type TaskType struct {
	Name        string
	Version     string
	Concurrency int
}

// ValidateTypes checks what a Describe returned: at least one type, each with a
// name and a version, names unique, concurrency not negative.
func ValidateTypes(types []TaskType) error {
	if len(types) == 0 {
		return errors.New("no task types: Describe must return at least one TaskType")
	}
	seen := map[string]bool{}
	for i, t := range types {
		switch {
		case t.Name == "":
			return fmt.Errorf("task type #%d: Name is empty", i)
		case t.Version == "":
			return fmt.Errorf("task type %q: Version is empty (set e.g. \"1.0.0\")", t.Name)
		case t.Concurrency < 0:
			return fmt.Errorf("task type %q: Concurrency %d is negative (use 0 for no suggestion)", t.Name, t.Concurrency)
		case seen[t.Name]:
			return fmt.Errorf("task type %q listed twice", t.Name)
		}
		seen[t.Name] = true
	}
	return nil
}
