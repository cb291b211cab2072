package pid1

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestSetReportingOrder: the order is written, and the old one returned, only where
// the guest can report free pages (the kernel's file and a virtio balloon that
// negotiated free page reporting); otherwise nothing is written and the error wraps
// ErrNoReporting.
func TestSetReportingOrder(t *testing.T) {
	write := func(t *testing.T, p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// features of a balloon: bit 5 (VIRTIO_BALLOON_F_REPORTING) as given
	features := func(reporting bool) string {
		f := []byte("0110000000000000000000000000000000000000000000000000000000000000\n")
		if reporting {
			f[balloonReportingBit] = '1'
		}
		return string(f)
	}
	for _, tc := range []struct {
		name      string
		kernel    bool   // the kernel has page_reporting
		balloon   string // "" none bound, else the features file
		wantWas   int
		wantErr   bool
		wantOrder string
	}{
		{name: "no page_reporting", wantErr: true},
		{name: "no balloon", kernel: true, wantErr: true, wantOrder: "9\n"},
		{name: "balloon without reporting", kernel: true, balloon: features(false), wantErr: true, wantOrder: "9\n"},
		{name: "balloon with reporting", kernel: true, balloon: features(true), wantWas: 9, wantOrder: "11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := t.TempDir()
			p := filepath.Join(sys, "module", "page_reporting", "parameters", "page_reporting_order")
			if tc.kernel {
				write(t, p, "9\n")
			}
			drv := filepath.Join(sys, "bus", "virtio", "drivers", "virtio_balloon")
			if err := os.MkdirAll(drv, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.balloon != "" {
				dev := filepath.Join(sys, "bus", "virtio", "devices", "virtio3")
				write(t, filepath.Join(dev, "features"), tc.balloon)
				if err := os.Symlink(dev, filepath.Join(drv, "virtio3")); err != nil {
					t.Fatal(err)
				}
			}
			was, err := SetReportingOrder(sys, ReportingOff)
			if tc.wantErr {
				if !errors.Is(err, ErrNoReporting) {
					t.Errorf("SetReportingOrder: %v; want an error wrapping ErrNoReporting", err)
				}
				if avail := ReportingAvailable(sys); !errors.Is(avail, ErrNoReporting) {
					t.Errorf("ReportingAvailable: %v; want an error wrapping ErrNoReporting", avail)
				}
			} else if err != nil || was != tc.wantWas {
				t.Errorf("SetReportingOrder = %d, %v; want %d, nil", was, err, tc.wantWas)
			}
			if tc.kernel {
				if b, _ := os.ReadFile(p); string(b) != tc.wantOrder {
					t.Errorf("page_reporting_order holds %q, want %q", b, tc.wantOrder)
				}
			}
		})
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
