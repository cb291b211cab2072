package pid1

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSetReportingOrder: the order is written where the kernel has free page
// reporting, and a kernel without it is no error.
func TestSetReportingOrder(t *testing.T) {
	sys := t.TempDir()
	if ok, err := SetReportingOrder(sys, ReportingOrder); ok || err != nil {
		t.Fatalf("without page_reporting: %v, %v; want false, nil", ok, err)
	}
	dir := filepath.Join(sys, "module", "page_reporting", "parameters")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "page_reporting_order")
	if err := os.WriteFile(p, []byte("9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, err := SetReportingOrder(sys, ReportingOff); !ok || err != nil {
		t.Fatalf("with page_reporting: %v, %v; want true, nil", ok, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "11" {
		t.Errorf("page_reporting_order holds %q, want 11", b)
	}
}

func TestMemFreeKiB(t *testing.T) {
	proc := t.TempDir()
	if err := os.WriteFile(filepath.Join(proc, "meminfo"), []byte("MemTotal:         387072 kB\nMemFree:          270836 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := memFreeKiB(proc); n != 270836 || err != nil {
		t.Errorf("memFreeKiB = %d, %v; want 270836", n, err)
	}
}
