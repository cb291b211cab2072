// Package shareguest boots plain busybox guests (internal/testguest) through libvirt
// (hypervisor.Libvirt, TCG, 1 vCPU, 256 MiB) with host directories shared over
// virtio-9p (hypervisor.DomainSpec.Filesystems), the data plane's channel into sealed
// guests (docs/dataplane.md). It measures the raw channel, with no Paddock in between
// (MeasureRead: the guest reads a file from a read-only share with dd bs=1M, timed by
// its own clock), so benchmarks can put "raw channel" beside "through Paddock" in the
// same run; and its tests check PID 1's share mounting (agent/pid1.MountShares) in a
// real guest, bytes in and bytes out.
//
// Guests need root, a running libvirtd (qemu:///system or $PADDOCK_TEST_LIBVIRT_URI), a
// kernel in /boot with its modules and a static busybox; without them tests skip (fail
// under PADDOCK_REQUIRE_VM=1). Run:
//
//	PADDOCK_REQUIRE_VM=1 go test -count=1 -v ./internal/shareguest
//	go test -run '^$' -bench Raw9p ./internal/shareguest
package shareguest
