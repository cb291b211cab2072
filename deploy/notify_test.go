package deploy_test

import (
	"os"
	"strings"
	"testing"
)

// TestUnitsAreNotify: both units wait for the daemon's READY=1 (Type=notify, from the
// main process only); cmd/paddock's TestSystemdNotify checks that the binary sends it.
func TestUnitsAreNotify(t *testing.T) {
	for _, unit := range []string{"deploy/systemd/paddock-server.service", "deploy/systemd/paddock-host.service"} {
		b, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for _, want := range []string{"Type=notify", "NotifyAccess=main"} {
			found := false
			for _, l := range lines {
				found = found || strings.TrimSpace(l) == want
			}
			if !found {
				t.Errorf("%s lacks %s", unit, want)
			}
		}
	}
}
