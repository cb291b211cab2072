package vmpool

import (
	"os"
	"path/filepath"
	"testing"
)

// TestConsoleFatal: a boot failure carries PID 1's last fatal line from the console log.
func TestConsoleFatal(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	if got := consoleFatal(p); got != "" {
		t.Errorf("no console log: %q, want empty", got)
	}
	log := "[    1.0] booting\r\npaddock-agent: fatal: first; powering off\r\n" +
		"\x1b[0mpaddock-agent: fatal: handler disk: no block device with serial \"paddock-handlers\"; powering off\r\n[    4.1] reboot: Power down\r\n"
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	want := `paddock-agent: fatal: handler disk: no block device with serial "paddock-handlers"; powering off`
	if got := consoleFatal(p); got != want {
		t.Errorf("consoleFatal = %q, want %q", got, want)
	}
}
