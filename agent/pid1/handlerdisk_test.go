//go:build linux

package pid1

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFindDiskBySerial: the handler disk is found by its serial on a fake sysfs,
// whatever its device name; without it the error lists the disks seen.
func TestFindDiskBySerial(t *testing.T) {
	sys := t.TempDir()
	for name, serial := range map[string]string{"vda": "", "vdb": "paddock-handlers\n"} {
		d := filepath.Join(sys, "block", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "serial"), []byte(serial), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := FindDiskBySerial(context.Background(), sys, "paddock-handlers")
	if err != nil || dev != "/dev/vdb" {
		t.Errorf("FindDiskBySerial = %q, %v; want /dev/vdb", dev, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = FindDiskBySerial(ctx, sys, "other")
	if err == nil || !strings.Contains(err.Error(), `vda (serial "")`) || !strings.Contains(err.Error(), `vdb (serial "paddock-handlers")`) {
		t.Errorf("FindDiskBySerial of a missing serial: %v, want the disks seen listed", err)
	}
}
