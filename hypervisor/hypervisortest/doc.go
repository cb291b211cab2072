// Package hypervisortest holds an in-memory fake of hypervisor.Hypervisor for unit
// tests of its callers (vmpool), and RunContract, the one test suite every
// implementation must pass: the fake (here) and the real libvirt implementation
// (hypervisor's own tests, against test:///default and against qemu:///system booting
// real guests). It imports package hypervisor, hence cgo and libvirt's headers.
//
// Run its tests with: go test -count=1 ./hypervisor/hypervisortest/
package hypervisortest
