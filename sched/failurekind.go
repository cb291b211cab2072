package sched

import (
	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// agentKinds maps the failure kinds an agent reports to the stored ones.
var agentKinds = map[agentv1.FailureKind]store.FailureKind{
	agentv1.FailureKind_FAILURE_KIND_HANDLER_ERROR:       store.HandlerError,
	agentv1.FailureKind_FAILURE_KIND_CRASHED:             store.Crashed,
	agentv1.FailureKind_FAILURE_KIND_TIMEOUT:             store.Timeout,
	agentv1.FailureKind_FAILURE_KIND_PANIC:               store.Panic,
	agentv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE:    store.OutputTooLarge,
	agentv1.FailureKind_FAILURE_KIND_BAD_OUTPUT:          store.BadOutput,
	agentv1.FailureKind_FAILURE_KIND_HANDLER_UNAVAILABLE: store.HandlerUnavailable,
	agentv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE:   store.InputUnavailable,
	agentv1.FailureKind_FAILURE_KIND_OUTPUT_TRANSFER:     store.OutputTransfer,
	agentv1.FailureKind_FAILURE_KIND_CANCELLED:           store.CancelledRun,
}

// apiKinds maps the stored failure kinds to the client API's.
var apiKinds = map[store.FailureKind]paddockv1.FailureKind{
	store.HandlerError:       paddockv1.FailureKind_FAILURE_KIND_HANDLER_ERROR,
	store.Crashed:            paddockv1.FailureKind_FAILURE_KIND_CRASHED,
	store.Timeout:            paddockv1.FailureKind_FAILURE_KIND_TIMEOUT,
	store.Panic:              paddockv1.FailureKind_FAILURE_KIND_PANIC,
	store.OutputTooLarge:     paddockv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE,
	store.BadOutput:          paddockv1.FailureKind_FAILURE_KIND_BAD_OUTPUT,
	store.HandlerUnavailable: paddockv1.FailureKind_FAILURE_KIND_HANDLER_UNAVAILABLE,
	store.InputUnavailable:   paddockv1.FailureKind_FAILURE_KIND_INPUT_UNAVAILABLE,
	store.OutputTransfer:     paddockv1.FailureKind_FAILURE_KIND_OUTPUT_TRANSFER,
	store.CancelledRun:       paddockv1.FailureKind_FAILURE_KIND_CANCELLED,
	store.LeaseExpired:       paddockv1.FailureKind_FAILURE_KIND_LEASE_EXPIRED,
	store.GuestGone:          paddockv1.FailureKind_FAILURE_KIND_GUEST_GONE,
	store.Refused:            paddockv1.FailureKind_FAILURE_KIND_REFUSED,
	store.ScheduleTimeout:    paddockv1.FailureKind_FAILURE_KIND_SCHEDULE_TIMEOUT,
	store.Preempted:          paddockv1.FailureKind_FAILURE_KIND_PREEMPTED,
	store.UpstreamFailed:     paddockv1.FailureKind_FAILURE_KIND_UPSTREAM_FAILED,
}

// reportKind is the stored failure kind of a failed or cancelled report: the agent's,
// or, from an agent that sets none, NoFailure (unknown) for a failure and CancelledRun
// for a cancellation.
func reportKind(r *agentv1.Report) store.FailureKind {
	if k, ok := agentKinds[r.GetFailureKind()]; ok {
		return k
	}
	if r.GetStatus() == agentv1.Status_STATUS_CANCELLED {
		return store.CancelledRun
	}
	return store.NoFailure
}

// kindProto is k in the client API (UNSPECIFIED for NoFailure and unknown kinds).
func kindProto(k store.FailureKind) paddockv1.FailureKind { return apiKinds[k] }
