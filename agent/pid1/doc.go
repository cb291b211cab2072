// Package pid1 holds the duties of a guest's init process that paddock-agent takes on
// when the kernel starts it as /init: mount /proc, /sys, /dev (devtmpfs), /tmp and /run;
// load kernel modules in the order the image manifest gives; supervise the agent
// process and reap every zombie child (PID 1 inherits all orphans); and on a fatal
// error print it on the console and power the machine off, so libvirt sees the domain
// stop instead of a hung guest.
//
// Nothing here mounts or powers off unless the process is PID 1 (MountAll refuses), so
// the agent is safe to start on a host. The package is Linux-only and needs no cgo.
//
// Unit tests (go test ./agent/pid1) cover supervision and reaping in an ordinary
// process; the PID-1 path itself is exercised by booting an image:
//
//	PADDOCK_REQUIRE_VM=1 go test -count=1 -run Boot ./images
package pid1
