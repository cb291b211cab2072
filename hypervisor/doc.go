// Package hypervisor owns Paddock's connection to libvirt; it is the only package that
// imports libvirt.org/go/libvirt (cgo). It owns:
//
//   - Config (hypervisor.uri, hypervisor.prefix, hypervisor.accel) and Connect;
//   - acceleration detection: kvm only where the CPU advertises vmx or svm AND /dev/kvm
//     exists (a paravirtual /dev/kvm alone is not enough: guests hang on it), else tcg
//     (libvirt domain type "qemu"); the choice and the reason are logged;
//   - DomainSpec → domain XML through libvirt.org/go/libvirtxml: direct kernel boot,
//     ACPI, virtio-blk disks, virtio-9p shared directories (accessmode squash, optionally
//     read-only; booted and checked by internal/shareguest), virtio-serial channels on
//     unix sockets, a serial console
//     logged to a file, a virtio balloon with statistics, no network unless asked;
//   - create (transient), graceful shutdown then destroy, destroy, lookup and list of
//     the domains whose names carry the prefix — nothing else on the host is touched;
//   - reconnection (reconnect.go): when libvirtd restarts, the connection's close
//     callback starts a reconnect with backoff until Close; guests keep running and
//     event subscribers keep their channels;
//   - lifecycle events from libvirt's event loop, per-domain statistics
//     (GetAllDomainStats), and QMP (query-status) through go-qemu's qmp.Monitor carried
//     over libvirt's monitor connection;
//   - every guest's CPU time (CPUTimes), on the local qemu:///system read from each
//     QEMU's /proc/<pid>/stat without any libvirt domain lock (proccpu.go,
//     TestProcCPUTimes): a domain being restored under load held libvirt's lock, and
//     every guest's figure, for over a minute.
//
// Callers depend on the Hypervisor interface; hypervisortest holds an in-memory fake and
// the contract suite both implementations pass.
//
// Tests come in three tiers: pure logic (golden XML files under testdata/ checked by
// virt-xml-validate, spec and config validation, acceleration detection from injected
// /proc/cpuinfo text); libvirt's in-process test:///default driver (the contract suite
// and prefix isolation, no daemon needed); and qemu:///system booting real guests built
// by internal/testguest (the contract suite; TestBootReadsVirtioSerial reads a line from
// the guest's virtio-serial port and checks console log, stats and QMP;
// TestVirshDestroyEmitsStopped kills a guest with virsh destroy and expects the stopped
// event within 2 s). The last tier needs root, libvirtd and virtlogd (`make setup`), a
// kernel in /boot with its modules, busybox-static and xmllint; without them those
// tests skip, or fail under PADDOCK_REQUIRE_VM=1. Run everything (about 30 s under TCG):
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 ./hypervisor/...
//
// Boot-to-first-byte benchmark:
//
//	sudo go test ./hypervisor/ -run '^$' -bench BootToVirtioSerial -benchtime 3x
//
// Refresh the golden XML files after an intended change with:
//
//	go test ./hypervisor/ -run TestGoldenXML -update
package hypervisor
