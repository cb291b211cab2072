// Package sched owns the server: the durable task queue and its store, the task state
// machine, the agent and host registry, placement, leases with fencing tokens, retries,
// the results archive and the client API.
package sched
