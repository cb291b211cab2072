package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityRoundTrip(t *testing.T) {
	a, err := NewIdentity("paddock-web-0a1b2c3d")
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewIdentity("paddock-web-0a1b2c3d")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Seed, b.Seed) || len(a.Seed) != IdentitySeedBytes {
		t.Fatalf("seeds %x and %x: want two different %d-byte seeds", a.Seed, b.Seed, IdentitySeedBytes)
	}
	got, err := ParseIdentity(a.Line())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != a.ID || !bytes.Equal(got.Seed, a.Seed) {
		t.Errorf("parsed %+v from %q", got, a.Line())
	}
}

func TestParseIdentityRejects(t *testing.T) {
	seed := strings.Repeat("ab", IdentitySeedBytes)
	for _, line := range []string{
		"",
		"PADDOCK-IDENTITY id=x",
		"PADDOCK-IDENTITY id=x seed=" + seed[:10],
		"PADDOCK-IDENTITY id=x seed=" + seed + "00",
		"PADDOCK-IDENTITY id=-bad seed=" + seed,
		"PADDOCK-IDENTITY id=a/b seed=" + seed,
		"PADDOCK-IDENTITY id=x seed=" + strings.ToUpper(seed),
	} {
		if id, err := ParseIdentity(line); err == nil {
			t.Errorf("ParseIdentity(%q) = %+v, want an error", line, id)
		}
	}
	if _, err := NewIdentity("bad id"); err == nil {
		t.Error("NewIdentity accepted an id with a space")
	}
}

// eofThen reads EOF a few times (no host connected) before the real data.
type eofThen struct {
	eofs int
	r    io.Reader
}

func (e *eofThen) Read(p []byte) (int, error) {
	if e.eofs > 0 {
		e.eofs--
		return 0, io.EOF
	}
	return e.r.Read(p)
}

func TestReadIdentity(t *testing.T) {
	id, _ := NewIdentity("paddock-web-0a1b2c3d")
	rest := "\x00RESYNC"
	r := &eofThen{eofs: 3, r: strings.NewReader("stale line\n" + id.Line() + rest)}
	got, err := ReadIdentity(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id.ID {
		t.Errorf("id %q, want %q", got.ID, id.ID)
	}
	left, _ := io.ReadAll(r.r)
	if string(left) != rest {
		t.Errorf("ReadIdentity consumed past its line: left %q", left)
	}

	if _, err := ReadIdentity(context.Background(), strings.NewReader(strings.Repeat("x", MaxIdentityLine+1))); err == nil {
		t.Error("an endless line was accepted")
	}
	if _, err := ReadIdentity(context.Background(), strings.NewReader("PADDOCK-IDENTITY id=x seed=zz\n")); err == nil {
		t.Error("a malformed identity line was accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ReadIdentity(ctx, &eofThen{eofs: 1 << 30}); err == nil {
		t.Error("ReadIdentity did not give up when ctx ended")
	}
}

// TestReportRestored: on a fake sysfs, a restored copy without free page reporting
// (no virtio balloon bound) changes nothing and says so in one line; with a balloon
// that negotiated reporting it sets order 0, nudges, and logs the order it replaced.
func TestReportRestored(t *testing.T) {
	run := func(sys string) string {
		var buf bytes.Buffer
		done := make(chan struct{})
		go func() { // reportRestored locks its thread for good: a goroutine of its own
			defer close(done)
			reportRestored(sys, slog.New(slog.NewTextHandler(&buf, nil)))
		}()
		<-done
		return buf.String()
	}
	sys := t.TempDir()
	order := filepath.Join(sys, "module", "page_reporting", "parameters", "page_reporting_order")
	if err := os.MkdirAll(filepath.Dir(order), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(order, []byte("11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	drv := filepath.Join(sys, "bus", "virtio", "drivers", "virtio_balloon")
	if err := os.MkdirAll(drv, 0o755); err != nil {
		t.Fatal(err)
	}

	out := run(sys)
	if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, "free page reporting not available") || !strings.Contains(out, "no virtio balloon") {
		t.Errorf("without a balloon, want one line saying reporting is not available and why; got %q", out)
	}
	if b, _ := os.ReadFile(order); string(b) != "11\n" {
		t.Errorf("without a balloon the order was changed to %q", b)
	}

	dev := filepath.Join(sys, "bus", "virtio", "devices", "virtio3")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "features"), []byte("0110010000000000000000000000000000000000000000000000000000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, filepath.Join(drv, "virtio3")); err != nil {
		t.Fatal(err)
	}
	out = run(sys)
	if !strings.Contains(out, "turned on and nudged") || !strings.Contains(out, "order_was=11") {
		t.Errorf("with a reporting balloon, want the order and the nudge logged; got %q", out)
	}
	if b, _ := os.ReadFile(order); string(b) != "0" {
		t.Errorf("page_reporting_order holds %q, want 0", b)
	}
}
