// Package bwshare shares a host's link among its data transfers (the GVDS idea,
// docs/dataplane.md "Bandwidth shares"): blob fetches into the host cache and output
// uploads each belong to a class, and every active class gets at least its minimum
// (host.bandwidth_classes.<name>.min) while the rest of the capacity (host.bandwidth) is
// shared by weight (host.bandwidth_classes.<name>.weight).
//
//   - Allocate is the allocation as a pure function: minimums first, the rest by weight.
//     When the minimums of the active classes exceed the capacity they are scaled down
//     in proportion (Allocation.Scaled; the Shaper logs it once per episode). No active
//     class gets less than Floor, so a class without a minimum never stalls.
//   - Shaper holds one golang.org/x/time/rate.Limiter per class and re-divides (SetLimit
//     on each active class's limiter) whenever a class gains its first transfer or
//     loses its last. Shaper.Reader wraps a transfer's byte stream: each Read (at most
//     64 KiB) waits on its class's limiter for the bytes read. Each limiter's burst is
//     500 ms of its rate, so a reader that was not scheduled for a while catches up.
//   - The class of a transfer travels in its context (WithClass); Classify picks it from
//     a task's tenant and service class. A class that is not configured is shaped as
//     DefaultClass (minimum 0, weight 1, unless configured), logged once per name.
//   - A capacity of 0 (host.bandwidth empty) does not shape: transfers are counted, not
//     limited.
//
// Metrics: paddock_host_transfer_bytes_total{class} (bytes/s per class:
// rate(...[1m])), paddock_host_bandwidth_limit_bytes_per_second{class} (each class's
// current share), paddock_host_bandwidth_capacity_bytes_per_second.
//
// Tests: table tests of Allocate; a real-transfer test (shaped reads of in-memory
// streams) checks the shares and the re-division; the test of the bandwidth shares over
// HTTP through the host cache lives in hostd/cache (TestBandwidthShares):
//
//	go test ./hostd/bwshare/
//	go test -v -run TestBandwidthShares ./hostd/cache/
package bwshare
