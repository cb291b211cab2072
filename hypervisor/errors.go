package hypervisor

import (
	"errors"
	"fmt"

	"libvirt.org/go/libvirt"
)

// Error classes. Every error this package returns wraps at most one of them; test with
// errors.Is. Callers map them to their own codes at their boundary (gRPC, exit codes).
var (
	// ErrInvalid: the caller's input is wrong (a *FieldError says which field and the fix).
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: no domain with that name (among the domains carrying the prefix).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a domain with that name already exists.
	ErrConflict = errors.New("already exists")
	// ErrUnavailable: libvirt cannot be reached or the host cannot do what was asked;
	// retrying later (after fixing the host) may succeed.
	ErrUnavailable = errors.New("unavailable")
)

// FieldError is a bad input: which field, what is wrong with it, and how to fix it.
// It wraps ErrInvalid.
type FieldError struct {
	Field   string // e.g. "memory", "name", "disks[1].target", "hypervisor.accel"
	Problem string // what is wrong, with the offending value
	Fix     string // what to do instead
}

func (e *FieldError) Error() string {
	s := "invalid " + e.Field + ": " + e.Problem
	if e.Fix != "" {
		s += " (fix: " + e.Fix + ")"
	}
	return s
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, fix, problemFormat string, args ...any) *FieldError {
	return &FieldError{Field: field, Problem: fmt.Sprintf(problemFormat, args...), Fix: fix}
}

// classify wraps a libvirt error with the class it belongs to, keeping libvirt's own
// error (and its message) in the chain.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var lerr libvirt.Error
	if !errors.As(err, &lerr) {
		return err
	}
	switch lerr.Code {
	case libvirt.ERR_NO_DOMAIN:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case libvirt.ERR_DOM_EXIST:
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case libvirt.ERR_SYSTEM_ERROR, libvirt.ERR_NO_CONNECT, libvirt.ERR_RPC, libvirt.ERR_AUTH_FAILED,
		libvirt.ERR_INTERNAL_ERROR, libvirt.ERR_OPERATION_TIMEOUT, libvirt.ERR_AGENT_UNRESPONSIVE:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case libvirt.ERR_XML_ERROR, libvirt.ERR_XML_DETAIL, libvirt.ERR_CONFIG_UNSUPPORTED, libvirt.ERR_INVALID_ARG:
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}

func isLibvirtCode(err error, codes ...libvirt.ErrorNumber) bool {
	var lerr libvirt.Error
	if !errors.As(err, &lerr) {
		return false
	}
	for _, c := range codes {
		if lerr.Code == c {
			return true
		}
	}
	return false
}
