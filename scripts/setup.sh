#!/usr/bin/env bash
# setup.sh prepares a Debian/Ubuntu machine to build and test Paddock.
#
# Idempotent: it installs only the packages that are missing, starts virtlogd and
# libvirtd only when they are not running and no init system manages them, and
# waits until libvirt answers. It says what it did. Run it as root or with sudo.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || die "not root and sudo is missing: run as root"
	SUDO="sudo"
fi

# Packages Paddock needs. linux-image-amd64 gives guests a kernel with virtio modules;
# busybox-static builds the plain baseline initramfs of the tests and benchmarks;
# libvirt-clients carries virsh and virt-xml-validate (which runs xmllint, from libxml2-utils); protobuf-compiler regenerates
# the committed protobuf code (make proto); postgresql backs the PostgreSQL store tests;
# vagrant and vagrant-libvirt run `vagrant validate` on the Vagrantfile (deploy tests; about
# 66 packages, mostly ruby: 15 MB download, 76 MB on disk, 8 s here); openssl makes the cluster
# certificates (deploy/pki.sh); chromium runs the web console's browser tests (sched/console);
# erofs-utils writes an image's read-only handler disk (mkfs.erofs; images/handlerdisk.go).
PACKAGES=(
	libvirt-daemon-system libvirt-dev libvirt-clients libxml2-utils
	qemu-system-x86 qemu-utils
	linux-image-amd64 busybox-static erofs-utils
	protobuf-compiler pkg-config gcc make git ca-certificates openssl
	postgresql
	vagrant vagrant-libvirt
	chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -gt 0 ]; then
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them by hand"
	say "installing ${missing[*]}"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
	say "all packages present"
fi

if ! command -v go >/dev/null; then
	die "go is not on PATH: install Go 1.26 from https://go.dev/dl/ and add /usr/local/go/bin to PATH"
fi

ls /boot/vmlinuz-* >/dev/null 2>&1 || die "no kernel in /boot: apt-get install linux-image-amd64"

# Is an init system managing services? (PID 1 is systemd or sysvinit's init.)
init_managed() {
	local comm
	comm="$(cat /proc/1/comm 2>/dev/null || true)"
	[ "$comm" = "systemd" ] || [ "$comm" = "init" ]
}

start_daemon() { # name, pidfile-pattern
	local name="$1"
	if pgrep -x "$name" >/dev/null; then
		say "$name already running"
		return
	fi
	if init_managed && command -v systemctl >/dev/null && [ "$(cat /proc/1/comm)" = "systemd" ]; then
		say "starting $name through systemd"
		$SUDO systemctl start "$name" || die "systemctl start $name failed"
		return
	fi
	if init_managed && [ -x "/etc/init.d/$name" ]; then
		say "starting $name through /etc/init.d"
		$SUDO "/etc/init.d/$name" start || die "/etc/init.d/$name start failed"
		return
	fi
	say "starting $name -d (no init system manages it)"
	$SUDO "$name" -d || die "$name -d failed"
}

# virtlogd first: without it domain creation fails with
# "Failed to connect socket to '/run/libvirt/virtlogd-sock'".
start_daemon virtlogd
start_daemon libvirtd

for i in $(seq 1 60); do
	if $SUDO virsh -c qemu:///system version >/dev/null 2>&1; then
		say "libvirt answers at qemu:///system ($($SUDO virsh -c qemu:///system version | awk '/Running hypervisor/ {print $3, $4}'))"
		exit 0
	fi
	sleep 0.5
done
die "libvirt did not answer at qemu:///system within 30s: check 'libvirtd -v' and /var/log/libvirt"
