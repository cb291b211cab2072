// Package images builds Paddock's micro-VM images and the guests' scratch disks.
//
// An image is a kernel (by default the host's newest /boot/vmlinuz-*) and a gzip
// compressed cpio (newc) initramfs holding paddock-agent as /init, the kernel modules
// the guest needs (kmod.DefaultGuestModules plus the spec's, with their dependencies
// from modules.dep, in load order, decompressed to plain .ko), the agent's
// configuration (/etc/paddock/agent.json) and the manifest (/etc/paddock/manifest.json);
// and, when it has handlers, a read-only erofs disk image (handlers.erofs, written with
// mkfs.erofs from erofs-utils) holding the handler binaries uncompressed, which every
// guest of the image attaches and PID 1 mounts at /usr/lib/paddock/handlers
// (handlerdisk.go). Store.Build writes it to a content-addressed directory
// <store>/<sha256>/ with vmlinuz, initramfs.cpio.gz, handlers.erofs and manifest.json
// (the SHA-256 of every file, kernel version, modules in load order, handler names,
// versions and SHA-256, and the task types each handler serves).
//
// One handler binary may serve several task types (testhandler serves test.echo,
// test.sleep, …), so the build asks each handler: it starts the binary once on the
// build host through plugins/runner — checksum, go-plugin handshake, Describe, as the
// agent does in the guest — and records the types it answers (name, version,
// suggested concurrency; sorted) in the manifest, where they are part of the digest.
// Handlers are static executables for the guest, which has the host's architecture.
// A handler that does not start or describe itself fails the build naming the file.
//
// Builds are reproducible (entries sorted, owner root, mtime 0, no gzip name or time:
// the same inputs give the same bytes and digest) and cached on a hash of the inputs
// (a cache hit reads no file content). Builds go through a temporary directory that is
// renamed into place, so concurrent builds never corrupt the store.
//
// NewScratch makes per-guest copy-on-write qcow2 overlays with qemu-img.
//
// Tests: unit tests use a synthetic kernel and module tree; those marked below need the
// host's kernel (/boot, /lib/modules), and the boot tests need libvirt with QEMU:
//
//	go test -count=1 ./images/...                          # skips what is missing
//	PADDOCK_REQUIRE_VM=1 go test -count=1 ./images/...     # fails instead (CI)
//	go test -run '^$' -bench . -benchtime 3x ./images      # build and boot benchmarks
package images
