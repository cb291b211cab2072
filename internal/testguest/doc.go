// Package testguest builds the smallest bootable guest for integration tests: the host's
// kernel plus an initramfs holding a static busybox, the virtio modules (resolved with
// images/kmod) and an /init script that mounts /proc, /sys and /dev, loads the modules,
// finds the virtio-serial port named org.paddock.agent.0 and runs the test's script.
//
// The same initramfs is the "plain busybox" baseline the image benchmarks compare against.
// It needs a kernel in /boot with its modules and /bin/busybox (busybox-static); without
// them the test is skipped, or failed under PADDOCK_REQUIRE_VM=1 (see internal/testutil).
package testguest
