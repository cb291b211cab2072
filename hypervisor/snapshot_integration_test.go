package hypervisor

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testguest"
	"github.com/paddockvm/paddock/internal/testutil"
)

// TestSnapshotClones: a busybox guest is saved with SaveState — first onto a 2 MiB
// tmpfs, which fills up (a clear error, the guest stays paused and can be saved again),
// then into a directory with room. Two clones are restored from the one file under
// their own names and sockets; each answers its own line, and the 16 bytes each reads
// from /dev/urandom after restore differ (the new generation id reseeds the kernel
// RNG). A truncated state file fails Restore and leaves no domain behind.
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -run TestSnapshotClones -v ./hypervisor
func TestSnapshotClones(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	g := testguest.Build(t, testguest.Options{Script: `echo template-ready > "$PORT"
line=""
while [ -z "$line" ]; do read -r line < "$PORT" || sleep 0.05; done
echo "clone $line $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$PORT"
sleep 3600`})
	cfg := DefaultConfig()
	cfg.URI = uri
	l := mustConnect(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	tmpl := bootSpec(t, g, "paddock-hvsnap-"+randHex(t))
	if _, err := l.CreateTemplate(ctx, tmpl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Destroy(context.Background(), tmpl.Name) })
	if line := readLine(t, tmpl.Channels[0].SocketPath, 6*time.Minute); line != "template-ready" {
		t.Fatalf("template wrote %q", line)
	}

	full := filepath.Join(g.Dir, "full")
	os.Mkdir(full, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", full).CombinedOutput(); err != nil {
		t.Fatalf("mounting a small tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", full).Run() })
	err := l.SaveState(ctx, tmpl.Name, filepath.Join(full, "state"))
	if err == nil {
		t.Fatal("SaveState onto a full 2 MiB tmpfs succeeded")
	}
	t.Logf("disk full: %v", err)

	state := filepath.Join(g.Dir, "state")
	if err := l.SaveState(ctx, tmpl.Name, state); err != nil {
		t.Fatalf("SaveState after a failed one: %v", err)
	}
	fi, _ := os.Stat(state)
	t.Logf("state file: %d bytes", fi.Size())
	l.Destroy(ctx, tmpl.Name)

	rands := map[string]string{}
	for i, word := range []string{"alpha", "beta"} {
		dir := testguest.QEMUDir(t)
		spec := tmpl
		spec.Name = tmpl.Name + "-c" + string(rune('0'+i))
		spec.Channels = []Channel{{Name: testguest.PortName, SocketPath: filepath.Join(dir, "agent.sock")}}
		spec.ConsoleLog = filepath.Join(dir, "console.log")
		start := time.Now()
		if _, err := l.Restore(ctx, spec, state); err != nil {
			t.Fatalf("Restore %s: %v", spec.Name, err)
		}
		t.Cleanup(func() { l.Destroy(context.Background(), spec.Name) })
		got := exchange(t, spec.Channels[0].SocketPath, word)
		t.Logf("clone %s answered %q %v after Restore began", spec.Name, got, time.Since(start).Round(time.Millisecond))
		f := strings.Fields(got)
		if len(f) != 3 || f[0] != "clone" || f[1] != word || len(f[2]) != 32 {
			t.Fatalf("clone %s answered %q", spec.Name, got)
		}
		if other, dup := rands[f[2]]; dup {
			t.Errorf("clones %s and %s read the same random bytes %s after restore", other, spec.Name, f[2])
		}
		rands[f[2]] = spec.Name
	}

	short := filepath.Join(g.Dir, "short")
	b, _ := os.ReadFile(state)
	os.WriteFile(short, b[:len(b)/2], 0o600)
	spec := tmpl
	spec.Name = tmpl.Name + "-bad"
	dir := testguest.QEMUDir(t)
	spec.Channels = []Channel{{Name: testguest.PortName, SocketPath: filepath.Join(dir, "agent.sock")}}
	spec.ConsoleLog = filepath.Join(dir, "console.log")
	if _, err := l.Restore(ctx, spec, short); err == nil {
		l.Destroy(context.Background(), spec.Name)
		t.Fatal("Restore from a truncated state succeeded")
	} else {
		t.Logf("truncated: %v", err)
	}
	if _, err := l.Lookup(ctx, spec.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a failed restore, Lookup = %v, want ErrNotFound", err)
	}
}

// exchange connects to a clone's socket, sends word and returns the line it answers.
func exchange(t *testing.T, socket, word string) string {
	t.Helper()
	var conn net.Conn
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("unix", socket); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(4 * time.Minute))
	// The guest opens its port for each read: a line written while it is closed (the
	// clone only just resumed, or is slow under load) can be lost, so the word is sent
	// again every few seconds until the answer comes (the guest answers once).
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			if _, err := conn.Write([]byte(word + "\n")); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(3 * time.Second):
			}
		}
	}()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the clone's answer (got %q): %v", line, err)
	}
	return strings.TrimSpace(line)
}
