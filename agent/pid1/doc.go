// Package pid1 holds the duties of a guest's init process that paddock-agent takes on
// when the kernel starts it as /init: mount /proc, /sys, /dev (devtmpfs), /tmp and /run;
// load kernel modules in the order the image manifest gives; mount the image's
// read-only handler disk, found by its virtio-blk serial (handlerdisk_linux.go); mount the data plane's
// virtio-9p shares (api/guestabi InTag read-only at InDir, OutTag at OutDir) when the
// host offers their tags, with the options measured fastest (NinePOptions); supervise the agent
// process and reap every zombie child (PID 1 inherits all orphans); watch the ACPI
// power button (the host's graceful shutdown: libvirt's ACPI power-button request
// reaches the guest as KEY_POWER on the "Power Button" evdev device of the kernel's
// button driver) and on a press stop the agent (SIGTERM, SIGKILL after a grace period)
// and power off; set the free page reporting order (every free page goes back to the
// host; a warm-start template reports nothing until its restored copies turn it on,
// and zeroes its free memory before its snapshot: memory_linux.go says why); and on a
// fatal error print it on the console and power the machine
// off, so libvirt sees the domain stop instead of a hung guest.
//
// Nothing here mounts or powers off unless the process is PID 1 (MountAll refuses), so
// the agent is safe to start on a host. The package is Linux-only and needs no cgo.
//
// Unit tests (go test ./agent/pid1) cover supervision and reaping in an ordinary
// process, power-button discovery and event decoding on fake sysfs and event streams,
// share discovery and mount arguments on a fake sysfs; MountShares on real shares in a
// TCG guest is tested by internal/shareguest (go test -run Shares ./internal/shareguest);
// the PID-1 path itself (including a real power-button shutdown) is exercised by
// booting an image:
//
//	PADDOCK_REQUIRE_VM=1 go test -count=1 -run Boot ./images
package pid1
