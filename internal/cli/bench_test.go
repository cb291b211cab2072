package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestBench runs a small `paddock bench` with real agent processes and the real
// testhandler, and checks that every measure is reported with a positive value.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs real agents")
	}
	agent, handler := buildBinaries(t, "cmd/paddock-agent", "plugins/handlers/testhandler")
	out, errOut, code := run(t, "bench", "--tasks", "200", "--idle", "10", "--agent", agent, "--handler", handler)
	if code != 0 {
		t.Fatalf("bench: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, measure := range []string{
		`raw plugin calls/s, 16 in flight\s+(\d+)`,
		`durable tasks/s\s+(\d+)`,
		`submit→handler start p99, loaded\s+([\d.]+)ms`,
		`submit→handler start p50, one at a time\s+([\d.]+)ms`,
	} {
		m := regexp.MustCompile(measure).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("bench output lacks %q:\n%s", measure, out)
			continue
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v <= 0 && measure[0] != 's' {
			t.Errorf("%q = %s, want > 0", measure, m[1])
		}
	}
}

// TestBenchInputSize runs paddock bench --input-size with a real agent and the real
// checksum handler, and checks both rates are reported.
func TestBenchInputSize(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs real agents")
	}
	agent, handler := buildBinaries(t, "cmd/paddock-agent", "plugins/handlers/checksum")
	out, errOut, code := run(t, "bench", "--input-size", "3MiB", "--tasks", "2", "--agents", "1", "--agent", agent, "--handler", handler)
	if code != 0 {
		t.Fatalf("bench --input-size: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, measure := range []string{`raw blob put\+get bytes/s\s+([\d.]+) [KMG]iB/s`, `task input bytes/s\s+([\d.]+) [KMG]iB/s`} {
		m := regexp.MustCompile(measure).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("bench output lacks %q:\n%s", measure, out)
			continue
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v <= 0 {
			t.Errorf("%q = %s, want > 0", measure, m[1])
		}
	}
}

func TestBenchBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--tasks", "0"},
		{"bench", "--agents", "0"},
		{"bench", "--input-size", "0"},
		{"bench", "--input-size", "big"},
		{"bench", "--agent", "/nonexistent/paddock-agent", "--handler", "/bin/true"},
	} {
		_, errOut, code := run(t, args...)
		if code == 0 || !regexp.MustCompile(`--(tasks|agents|agent|input-size)`).MatchString(errOut) {
			t.Errorf("%v: exit %d, stderr %q; want an error naming the flag", args, code, errOut)
		}
	}
}

// buildBinaries builds the packages (paths from the repository root) with CGO_ENABLED=0
// into a temporary directory and returns the binaries' paths in the same order.
func buildBinaries(t *testing.T, pkgs ...string) (string, string) {
	t.Helper()
	return buildBinary(t, pkgs[0]), buildBinary(t, pkgs[1])
}

// buildBinary builds one package (its path from the repository root) with
// CGO_ENABLED=0 into a temporary directory and returns the binary's path.
func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, "../../"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	return bin
}
