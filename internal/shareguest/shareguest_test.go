package shareguest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/paddockvm/paddock/api/guestabi"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

// writeRandom writes size random bytes to path (mode 0444: a cache file as the host
// recipe wants it) and returns them.
func writeRandom(t testing.TB, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o444); err != nil {
		t.Fatal(err)
	}
	return b
}

// buildMountShares compiles testdata/mountshares (static, no cgo) for the guest.
func buildMountShares(t testing.TB) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testutil.Skip(t, "go not found in PATH", "run the tests with the Go toolchain in PATH")
	}
	bin := filepath.Join(t.TempDir(), "mountshares")
	cmd := exec.Command(goBin, "build", "-o", bin, "./testdata/mountshares")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/mountshares: %v\n%s", err, out)
	}
	return bin
}

// TestSharesRoundTrip boots a guest with the data plane's two shares (tags
// guestabi.InTag read-only and guestabi.OutTag writable, laid out as
// docs/dataplane.md's host recipe says), mounts them with pid1.MountShares as the
// agent's PID 1 does, reads an input file and writes it back to the output share. The
// host checks the guest read the input byte for byte (its sha256), the output file
// byte for byte, that the input share refused a write, and PID 1's mount lines.
func TestSharesRoundTrip(t *testing.T) {
	hv := Connect(t)
	bin := buildMountShares(t)
	in, out := ShareDir(t, false), ShareDir(t, true)
	input := writeRandom(t, filepath.Join(in, "input.bin"), 8<<20+12345)
	g := testguest.Build(t, testguest.Options{
		Script: "/bin/mountshares",
		Files:  map[string]string{"/bin/mountshares": bin},
	})
	console := Run(t, hv, g, []hypervisor.Filesystem{
		{Source: in, Tag: guestabi.InTag, ReadOnly: true},
		{Source: out, Tag: guestabi.OutTag},
	})
	sum := sha256.Sum256(input)
	for _, want := range []string{
		"init: mounted 9p share " + guestabi.InTag + " on " + guestabi.InDir + " (ro,",
		"init: mounted 9p share " + guestabi.OutTag + " on " + guestabi.OutDir + " (rw,",
		"mountshares: mounted=2",
		"mountshares: read=" + strconv.Itoa(len(input)) + " sha256=" + hex.EncodeToString(sum[:]),
		"mountshares: input-share-writable=false",
		"mountshares: done",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	got, err := os.ReadFile(filepath.Join(out, "output.bin"))
	if err != nil {
		t.Fatalf("reading the guest's output: %v\nconsole:\n%s", err, console)
	}
	if !bytes.Equal(got, input) {
		t.Errorf("output.bin: %d bytes, differs from the %d input bytes", len(got), len(input))
	}
	if _, err := os.Stat(filepath.Join(in, "intruder")); err == nil {
		t.Error("the guest created a file in the read-only input share")
	}
	// The host daemon (root) deletes what the guest wrote.
	if err := os.Remove(filepath.Join(out, "output.bin")); err != nil {
		t.Errorf("root cannot delete the guest's output: %v", err)
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}

// TestSharesAbsent: a guest started without shares mounts nothing and PID 1's code
// reports no error (the helper then fails to open the input, as it should).
func TestSharesAbsent(t *testing.T) {
	hv := Connect(t)
	bin := buildMountShares(t)
	g := testguest.Build(t, testguest.Options{
		Script: "/bin/mountshares",
		Files:  map[string]string{"/bin/mountshares": bin},
	})
	console := Run(t, hv, g, nil)
	if !strings.Contains(console, "mountshares: mounted=0") || strings.Contains(console, "mounted 9p share") {
		t.Errorf("a guest without shares: console should say mounted=0 and mount nothing\n%s", console)
	}
	if !strings.Contains(console, "mountshares: error=open-input") {
		t.Errorf("console lacks the expected open-input error\n%s", console)
	}
}

// TestMeasureRead: MeasureRead reports the size of the file and a positive time.
func TestMeasureRead(t *testing.T) {
	dir := ShareDir(t, false)
	writeRandom(t, filepath.Join(dir, "data.bin"), 32<<20)
	tp := MeasureRead(t, dir, "data.bin")
	if tp.Bytes != 32<<20 || tp.Elapsed <= 0 {
		t.Fatalf("MeasureRead = %v, want %d bytes in a positive time", tp, 32<<20)
	}
	t.Logf("raw virtio-9p read: %v", tp)
}

// BenchmarkRaw9pRead reports the raw channel's read throughput (a 256 MiB file, one
// guest per iteration) as guest-MB/s, the baseline for the data plane's end-to-end
// benchmark.
func BenchmarkRaw9pRead(b *testing.B) {
	dir := ShareDir(b, false)
	writeRandom(b, filepath.Join(dir, "data.bin"), 256<<20)
	var total Throughput
	for b.Loop() {
		tp := MeasureRead(b, dir, "data.bin")
		total.Bytes += tp.Bytes
		total.Elapsed += tp.Elapsed
	}
	b.ReportMetric(total.MBPerSec(), "guest-MB/s")
}
