package cli

import (
	"fmt"
	"strings"
	"testing"
)

// TestTaskStream: paddock task stream runs one test.echo task per stdin line through
// an ordered stream (a real agent process with the real testhandler, a real server) and
// prints the outputs one a line, in input order; durable and --transient; bad windows
// are usage errors naming the flag.
func TestTaskStream(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds binaries and runs a real agent")
	}
	url, _, ls := testServer(t)
	startTestAgent(t, ls, "streamer")
	var in, want strings.Builder
	for i := range 300 {
		fmt.Fprintf(&in, "line %d\n", i)
		fmt.Fprintf(&want, "line %d\n", i)
	}
	old := stdin
	t.Cleanup(func() { stdin = old })
	for _, extra := range [][]string{nil, {"--transient"}} {
		stdin = strings.NewReader(in.String())
		args := append([]string{"task", "stream", "--server", url, "--type", "test.echo", "--window", "16"}, extra...)
		out, errOut := mustRun(t, args...)
		if out != want.String() {
			t.Fatalf("paddock %s printed %d bytes, not the 300 lines in order:\n%.400s", strings.Join(args, " "), len(out), out)
		}
		if transient := len(extra) > 0; transient != strings.Contains(errOut, "lost") {
			t.Errorf("%v: stderr %q: a transient stream, and only it, warns that a restart loses its tasks", extra, errOut)
		}
	}
	for _, w := range []string{"0", "5000"} {
		stdin = strings.NewReader("x\n")
		if _, errOut, code := run(t, "task", "stream", "--server", url, "--type", "test.echo", "--window", w); code != 2 || !strings.Contains(errOut, "--window") {
			t.Errorf("--window %s: exit %d, stderr %q; want a usage error naming --window", w, code, errOut)
		}
	}
}
