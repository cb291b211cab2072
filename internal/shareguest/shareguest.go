package shareguest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/pid1"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

// Prefix starts the name of every guest this package boots.
const Prefix = "paddock-shareguest-"

// BootTimeout bounds one guest's life, boot to power-off; the Debian kernel under TCG
// boots in about 10-20 s on a quiet machine.
const BootTimeout = 5 * time.Minute

// QEMUUser is the user QEMU runs as under libvirt on Debian (qemu.conf "user"); a
// writable share must be writable by it (docs/dataplane.md, host-side recipe).
const QEMUUser = "libvirt-qemu"

var seq atomic.Int64

// Connect connects to the test libvirt (testutil.RequireLibvirt) with TCG and the
// prefix "paddock-"; the connection is closed in t.Cleanup.
func Connect(t testing.TB) *hypervisor.Libvirt {
	t.Helper()
	uri := testutil.RequireLibvirt(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hv, err := hypervisor.Connect(ctx, hypervisor.Config{URI: uri, Prefix: "paddock-", Accel: hypervisor.AccelTCG},
		hypervisor.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatalf("connecting to libvirt at %s: %v", uri, err)
	}
	t.Cleanup(func() { hv.Close() })
	return hv
}

// Run boots g (1 vCPU, 256 MiB, TCG) with the shares fss, waits until the guest powers
// off (its script has ended) and returns its console log. The guest is destroyed when
// the run ends, however it ends; running past BootTimeout fails the test.
func Run(t testing.TB, hv *hypervisor.Libvirt, g testguest.Guest, fss []hypervisor.Filesystem) string {
	t.Helper()
	n := seq.Add(1)
	name := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), n)
	console := filepath.Join(g.Dir, fmt.Sprintf("console-%d.log", n))
	spec := hypervisor.DomainSpec{
		Name: name, VCPUs: 1, MemoryMiB: 256,
		Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: "console=ttyS0 quiet panic=-1",
		Filesystems: fss,
		ConsoleLog:  console,
	}
	ctx, cancel := context.WithTimeout(context.Background(), BootTimeout)
	defer cancel()
	if _, err := hv.Create(ctx, spec); err != nil {
		t.Fatalf("creating guest %s: %v", name, err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		if err := hv.Destroy(dctx, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			t.Errorf("destroying %s: %v", name, err)
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := hv.Lookup(ctx, name); errors.Is(err, hypervisor.ErrNotFound) {
			break // powered off (on_poweroff destroy)
		} else if err != nil && ctx.Err() == nil {
			t.Fatalf("looking up guest %s: %v", name, err)
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(console)
			t.Fatalf("guest %s still running after %s\nconsole:\n%s", name, BootTimeout, b)
		case <-tick.C:
		}
	}
	b, err := os.ReadFile(console)
	if err != nil {
		t.Fatalf("reading the console log of %s: %v", name, err)
	}
	return string(b)
}

// ShareDir makes an empty directory QEMU can use as a share: under a 0755 directory
// (testguest.QEMUDir, removed at the end of the test), mode 0755 and owned by root for
// a read-only share, or owned by QEMUUser with mode 0700 for a writable one (the
// host-side recipe in docs/dataplane.md).
func ShareDir(t testing.TB, writable bool) string {
	t.Helper()
	dir := filepath.Join(testguest.QEMUDir(t), "share")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if writable {
		u, err := user.Lookup(QEMUUser)
		if err != nil {
			testutil.Skip(t, "no user "+QEMUUser+": "+err.Error(), "install libvirt-daemon-system (`make setup`), which creates it")
		}
		uid, _ := strconv.Atoi(u.Uid)
		if err := os.Chown(dir, uid, 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Throughput is bytes moved in a time measured by the guest's clock (/proc/uptime,
// 10 ms resolution: use files of tens of MiB or more).
type Throughput struct {
	Bytes   int64
	Elapsed time.Duration
}

// MBPerSec is the throughput in MB/s (10^6 bytes per second).
func (tp Throughput) MBPerSec() float64 {
	if tp.Elapsed <= 0 {
		return 0
	}
	return float64(tp.Bytes) / 1e6 / tp.Elapsed.Seconds()
}

func (tp Throughput) String() string {
	return fmt.Sprintf("%d bytes in %s (%.1f MB/s)", tp.Bytes, tp.Elapsed, tp.MBPerSec())
}

// ReadTag is the mount tag of the share MeasureRead exports.
const ReadTag = "shareguest.read"

// readScript mounts ReadTag read-only with PID 1's options and reads the file named by
// $NAME with dd bs=1M between two readings of the guest's uptime.
const readScript = `mkdir -p /mnt/share
if mount -t 9p -o "$OPTS,ro,nosuid,nodev" ` + ReadTag + ` /mnt/share; then
  size=$(stat -c %s "/mnt/share/$NAME")
  a=$(cut -d' ' -f1 /proc/uptime)
  if dd if="/mnt/share/$NAME" of=/dev/null bs=1M 2>/dev/null; then
    b=$(cut -d' ' -f1 /proc/uptime)
    echo "shareguest: result bytes=$size start=$a end=$b"
  else
    echo "shareguest: error=dd"
  fi
else
  echo "shareguest: error=mount"
fi
`

var resultRE = regexp.MustCompile(`shareguest: result bytes=(\d+) start=([0-9.]+) end=([0-9.]+)`)

// MeasureRead boots a plain busybox guest (no agent, no Paddock) with hostDir shared
// read-only over virtio-9p, mounted with the options PID 1 uses (pid1.NinePOptions),
// reads hostDir/name with `dd bs=1M` to /dev/null and returns the bytes and the time
// the guest's clock measured around the dd. hostDir and everything above it must be
// readable by QEMU (ShareDir makes such a directory). It boots one guest per call.
func MeasureRead(t testing.TB, hostDir, name string) Throughput {
	t.Helper()
	hv := Connect(t)
	g := testguest.Build(t, testguest.Options{Script: fmt.Sprintf("OPTS=%q NAME=%q\n", pid1.NinePOptions, name) + readScript})
	console := Run(t, hv, g, []hypervisor.Filesystem{{Source: hostDir, Tag: ReadTag, ReadOnly: true}})
	m := resultRE.FindStringSubmatch(console)
	if m == nil {
		t.Fatalf("the guest reported no read result for %s/%s\nconsole:\n%s", hostDir, name, console)
	}
	bytes, _ := strconv.ParseInt(m[1], 10, 64)
	start, _ := strconv.ParseFloat(m[2], 64)
	end, _ := strconv.ParseFloat(m[3], 64)
	return Throughput{Bytes: bytes, Elapsed: time.Duration((end - start) * float64(time.Second))}
}
