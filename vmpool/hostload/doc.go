// Package hostload watches the host's headroom for the host daemon: CPU busy percent,
// memory available, and NIC throughput as rates (bytes/s computed from the deltas of
// the kernel's cumulative counters between two samples, never the counters themselves),
// read with github.com/shirou/gopsutil/v3 on a configurable interval.
//
// Thresholds (cpu_percent, min_mem_available_mib, nic_bytes_per_sec) say when the host
// is too loaded for a pool to scale up; Thresholds.Exceeded names the resources over
// their limit. A Monitor is a prometheus.Collector (paddock_host_* gauges).
//
// Tests: unit tests feed a scripted Source; TestSystemSource reads this machine's real
// counters through gopsutil (no privileges needed):
//
//	go test -count=1 ./vmpool/hostload/
package hostload
