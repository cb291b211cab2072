// Package guesttest holds the transport's in-guest test: it boots a real guest
// (libvirt, QEMU under TCG) whose /init runs agent/transport/testdata/guestecho on
// the guest's real virtio-serial port, and checks that sessions survive the host
// disconnecting and reconnecting, with stale bytes in the port, without a single
// corrupted byte. It needs cgo (libvirt), root, a kernel and busybox:
//
//	PADDOCK_REQUIRE_VM=1 go test -count=1 -v ./agent/transport/guesttest
package guesttest
