package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// startHost builds the guest image (paddock-agent and the test handler), starts `paddock
// host` in dev mode against the run's server with one pool of p.Guests guests (1 vCPU,
// 256 MiB, min_idle = max; a boot may take 6 minutes: TCG on a loaded 2-core machine), and
// waits until their agents are connected.
func (r *run) startHost(uri string) {
	t := r.t
	r.uri, r.prefix = uri, "paddock-chaos"+randHex(3)+"-"
	for _, d := range []string{"data", "images", "run"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hostID := "chaos-host-" + randHex(3)
	cfg := fmt.Sprintf(`data_dir: %s
log:
  level: info
  format: text
hypervisor:
  uri: %s
  prefix: %s
images:
  dir: %s
host:
  id: %s
  server: %s
  dev: true
  run_dir: %s
  metrics_listen: ""
  tick: 500ms
`, filepath.Join(r.dir, "data"), uri, r.prefix, filepath.Join(r.dir, "images"), hostID, r.clusterAddr, filepath.Join(r.dir, "run"))
	cfgPath := filepath.Join(r.dir, "host.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := exec.Command(filepath.Join(r.bin, "paddock"), "--config", cfgPath, "image", "build", "--no-progress",
		"--agent", filepath.Join(r.bin, "paddock-agent"), "--handler", "testhandler="+filepath.Join(r.bin, "handlers", "testhandler")).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("paddock image build: %v\n%s", err, stderr)
	}
	digest := strings.TrimSpace(string(out))
	t.Logf("image %s built in %v", digest, time.Since(start).Round(100*time.Millisecond))
	pools := fmt.Sprintf(`  pools:
    - name: chaos
      image: %s
      vcpus: 1
      memory: 256
      min_idle: %d
      max: %d
      idle_timeout: 1h
      boot_timeout: 6m
      task_types: [test.echo, test.sleep, test.flaky]
`, digest, r.p.Guests, r.p.Guests)
	if err := os.WriteFile(cfgPath, []byte(cfg+pools), 0o644); err != nil {
		t.Fatal(err)
	}
	r.host = &component{name: "host", bin: filepath.Join(r.bin, "paddock"), args: []string{"--config", cfgPath, "host"}, dir: r.dir}
	if err := r.host.start(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	deadline := start.Add(10 * time.Minute)
	for {
		ids, err := r.connectedAgents()
		n := 0
		for id := range ids {
			if strings.HasPrefix(id, r.prefix) {
				n++
			}
		}
		if err == nil && n >= r.p.Guests {
			break
		}
		if ex, st := r.host.exitedEarly(); ex {
			t.Fatalf("the host daemon exited at start (%s):\n%s", st, r.host.tail(40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d guests' agents connected after 10m (%v); host log:\n%s", n, r.p.Guests, err, r.host.tail(40))
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d guests up in %v", r.p.Guests, time.Since(start).Round(100*time.Millisecond))
}
