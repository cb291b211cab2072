package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"empty is defaults", "", ""},
		{"full", `{"port":"org.x.1","port_wait":"2s","self_check":{"disks":["/dev/vda"]},"labels":{"a":"b"}}`, ""},
		{"unknown field", `{"prot":"x"}`, `unknown field "prot"`},
		{"bad port", `{"port":"a b"}`, "field port"},
		{"bad wait", `{"port_wait":"soon"}`, "field port_wait"},
		{"bad disk", `{"self_check":{"disks":["vda"]}}`, "self_check.disks[0]"},
		{"data dir", `{"data_dir":"/var/lib/paddock-agent"}`, ""},
		{"relative data dir", `{"data_dir":"data"}`, "field data_dir"},
		{"one server", `{"server":"10.0.0.5:7071"}`, ""},
		{"servers as a string", `{"server":"10.0.0.5:7071,10.0.0.6:7071"}`, ""},
		{"servers as an array", `{"server":["10.0.0.5:7071","10.0.0.6:7071"]}`, ""},
		{"server without port", `{"server":["10.0.0.5:7071","10.0.0.6"]}`, "field server"},
		{"server of the wrong type", `{"server":7071}`, "field server"},
		{"lazy handlers", `{"handler_start":"lazy"}`, ""},
		{"eager handlers", `{"handler_start":"eager"}`, ""},
		{"bad handler start", `{"handler_start":"later"}`, "field handler_start"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(tc.in, "server") && len(cfg.Server.Addrs()) == 0 {
					t.Fatalf("ParseConfig(%s): no server address in %+v", tc.in, cfg)
				}
				if cfg.Port == "" {
					t.Fatalf("no default port: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseConfig(%s) = %v, want error containing %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

// TestRunOutsideGuest: on a host (no such virtio port) Run gives up after port_wait with
// an error naming the port.
func TestRunOutsideGuest(t *testing.T) {
	cfg := DefaultConfig()
	cfg.PortWait = "100ms"
	err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), DefaultPort) {
		t.Fatalf("Run outside a guest = %v, want an error naming %s", err, DefaultPort)
	}
}

// TestAgentBinaryOutsideGuestMountsNothing runs the real binary as an ordinary process
// and checks that it exits with a clear error and leaves the mount table alone.
func TestAgentBinaryOutsideGuestMountsNothing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "paddock-agent")
	build := exec.Command("go", "build", "-o", bin, "github.com/paddockvm/paddock/cmd/paddock-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	cfg := filepath.Join(dir, "agent.json")
	os.WriteFile(cfg, []byte(`{"port_wait":"200ms"}`), 0o644)
	before, _ := os.ReadFile("/proc/self/mountinfo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), DefaultPort) {
		t.Fatalf("agent outside a guest: err=%v out=%s; want a failure naming the port", err, out)
	}
	after, _ := os.ReadFile("/proc/self/mountinfo")
	if string(before) != string(after) {
		t.Fatalf("the mount table changed while the agent ran outside a guest")
	}
}
