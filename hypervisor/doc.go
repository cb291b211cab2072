// Package hypervisor owns Paddock's connection to libvirt; it is the only package that
// imports libvirt.org/go/libvirt (cgo). It owns:
//
//   - Config (hypervisor.uri, hypervisor.prefix, hypervisor.accel) and Connect;
//   - acceleration detection: kvm only where the CPU advertises vmx or svm AND /dev/kvm
//     exists (a paravirtual /dev/kvm alone is not enough: guests hang on it), else tcg
//     (libvirt domain type "qemu"); the choice and the reason are logged;
//   - DomainSpec → domain XML through libvirt.org/go/libvirtxml: direct kernel boot,
//     ACPI, virtio-blk disks, virtio-serial channels on unix sockets, a serial console
//     logged to a file, a virtio balloon with statistics, no network unless asked;
//   - create (transient), graceful shutdown then destroy, destroy, lookup and list of
//     the domains whose names carry the prefix — nothing else on the host is touched;
//   - lifecycle events from libvirt's event loop, per-domain statistics
//     (GetAllDomainStats), and QMP (query-status) through go-qemu's qmp.Monitor carried
//     over libvirt's monitor connection.
//
// Callers depend on the Hypervisor interface; hypervisortest holds an in-memory fake and
// the contract suite both implementations pass.
//
// Tests come in three tiers: pure logic (XML golden files, validation, acceleration);
// libvirt's in-process test:///default driver (the contract, no daemon needed); and
// qemu:///system booting real guests (contract, virtio-serial, events on virsh destroy,
// QMP). The last tier needs root, libvirtd and virtlogd (`make setup`), a kernel in
// /boot and busybox-static. Run everything, failing instead of skipping when something
// is missing:
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 ./hypervisor/...
//
// Refresh the golden XML files after an intended change with:
//
//	go test ./hypervisor/ -run TestGoldenXML -update
package hypervisor
