package vmpool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func poolCfg(name string, minIdle, maxN int) PoolConfig {
	return PoolConfig{Name: name, VCPUs: 1, MemoryMiB: 256, MinIdle: minIdle, Max: maxN, IdleTimeout: time.Minute}
}

// metricValue gathers reg and returns the value of the series name with labels.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func TestPoolConfigValidate(t *testing.T) {
	good := PoolConfig{Name: "web", Image: "abcd1234", VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 3, IdleTimeout: time.Minute}
	tests := []struct {
		name  string
		edit  func(*PoolConfig)
		field string
	}{
		{"good", func(*PoolConfig) {}, ""},
		{"empty name", func(c *PoolConfig) { c.Name = "" }, "name"},
		{"upper-case name", func(c *PoolConfig) { c.Name = "Web" }, "name"},
		{"long name", func(c *PoolConfig) { c.Name = strings.Repeat("a", MaxPoolNameLen+1) }, "name"},
		{"no image", func(c *PoolConfig) { c.Image = "" }, "image"},
		{"image not a digest", func(c *PoolConfig) { c.Image = "ubuntu:latest" }, "image"},
		{"short image prefix", func(c *PoolConfig) { c.Image = "abc" }, "image"},
		{"sha256 prefix accepted", func(c *PoolConfig) { c.Image = "sha256:abcd" }, ""},
		{"zero vcpus defaults to 1", func(c *PoolConfig) { c.VCPUs = 0 }, ""},
		{"negative vcpus", func(c *PoolConfig) { c.VCPUs = -1 }, "vcpus"},
		{"memory below the floor", func(c *PoolConfig) { c.MemoryMiB = 64 }, "memory"},
		{"negative min_idle", func(c *PoolConfig) { c.MinIdle = -1 }, "min_idle"},
		{"zero max", func(c *PoolConfig) { c.Max = 0 }, "max"},
		{"min_idle above max", func(c *PoolConfig) { c.MinIdle = 4 }, "min_idle"},
		{"no idle timeout", func(c *PoolConfig) { c.IdleTimeout = 0 }, "idle_timeout"},
		{"negative max_tasks_per_vm", func(c *PoolConfig) { c.MaxTasksPerVM = -1 }, "max_tasks_per_vm"},
		{"negative scratch", func(c *PoolConfig) { c.ScratchMiB = -1 }, "scratch_mib"},
		{"bad task type", func(c *PoolConfig) { c.TaskTypes = []string{"Sleep!"} }, "task_types[0]"},
		{"duplicate task type", func(c *PoolConfig) { c.TaskTypes = []string{"sleep", "sleep"} }, "task_types[1]"},
		{"warm_start snapshot", func(c *PoolConfig) { c.WarmStart = WarmSnapshot }, ""},
		{"warm_start cold", func(c *PoolConfig) { c.WarmStart = WarmCold }, ""},
		{"warm_start unknown", func(c *PoolConfig) { c.WarmStart = "hot" }, "warm_start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want a *ConfigError for field %s", err, tt.field)
			}
			if c.Name != "" && !strings.Contains(err.Error(), `pool "`+c.Name+`"`) {
				t.Errorf("error %q does not name the pool", err)
			}
			if ce.Fix == "" {
				t.Errorf("error %q gives no fix", err)
			}
		})
	}
}

func TestConfigValidateHost(t *testing.T) {
	base := Config{HostID: "h1", RunDir: "/run/paddock/vms"}
	tests := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"good", func(*Config) {}, ""},
		{"no host id", func(c *Config) { c.HostID = "" }, "host_id"},
		{"relative run dir", func(c *Config) { c.RunDir = "run" }, "run_dir"},
		{"run dir too long for sockets", func(c *Config) { c.RunDir = "/" + strings.Repeat("x", 80) }, "run_dir"},
		{"cpu threshold not a percentage", func(c *Config) { c.Thresholds.CPUPercent = 150 }, "thresholds"},
		{"negative tick", func(c *Config) { c.Tick = -time.Second }, "tick"},
		{"negative max_concurrent_starts", func(c *Config) { c.MaxConcurrentStarts = -1 }, "max_concurrent_starts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			err := c.ValidateHost()
			var ce *ConfigError
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("ValidateHost = %v, want a *ConfigError for %s", err, tt.field)
			}
		})
	}
	// Validate reports every bad pool at once, and duplicate names.
	c := base
	c.Pools = []PoolConfig{poolCfg("a", 3, 2), poolCfg("b", 0, 1), poolCfg("b", 0, 1)}
	c.Pools[0].Image, c.Pools[1].Image, c.Pools[2].Image = "abcd", "abcd", "abcd"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `pool "a": invalid min_idle`) || !strings.Contains(err.Error(), `two pools are named "b"`) {
		t.Fatalf("Validate = %v", err)
	}
}

func TestRequiredMemory(t *testing.T) {
	_, img := fakeImage(t, t.TempDir(), "sleep")
	// 9 MiB agent + 5 MiB handler + 3 MiB initramfs + 96 = 113 → the 128 floor.
	if got := RequiredMemoryMiB(img); got != MinMemoryMiB {
		t.Fatalf("RequiredMemoryMiB = %d, want %d", got, MinMemoryMiB)
	}
	img.Manifest.Handlers = append(img.Manifest.Handlers, images.Binary{Name: "big", Size: 200 << 20, Types: []images.TaskType{{Name: "big", Version: "1"}}})
	if got := RequiredMemoryMiB(img); got != 96+9+5+3+200 {
		t.Fatalf("RequiredMemoryMiB with a 200 MiB handler = %d, want %d", got, 96+9+5+3+200)
	}
	c := poolCfg("p", 0, 1)
	c.MemoryMiB = 256
	if _, err := c.CheckImage(img); err == nil || !strings.Contains(err.Error(), "invalid memory") || !strings.Contains(err.Error(), "313 MiB") {
		t.Fatalf("CheckImage with too little memory = %v", err)
	}
	c.MemoryMiB = 512
	if _, err := c.CheckImage(img); err != nil {
		t.Fatalf("CheckImage with enough memory = %v", err)
	}
}

// TestCheckImage: a pool's task_types are checked against the task types the image's
// handlers serve (as the manifest records them), not against the handler names; a
// pool without task_types serves every type of the image; an image whose manifest
// predates the recorded types is refused with a request to rebuild it.
func TestCheckImage(t *testing.T) {
	// As the real example handlers: testhandler serves test.*, compress several types.
	_, img := fakeImage(t, t.TempDir(), "testhandler=test.echo,test.sleep,test.flaky", "compress=compress.gzip,decompress.gzip", "checksum")
	old := img
	old.Manifest.Schema = 1
	old.Manifest.Handlers = slices.Clone(img.Manifest.Handlers)
	for i := range old.Manifest.Handlers {
		old.Manifest.Handlers[i].Types = nil
	}
	noTypes := img
	noTypes.Manifest.Handlers = slices.Clone(img.Manifest.Handlers)
	noTypes.Manifest.Handlers[1].Types = nil
	tests := []struct {
		name    string
		img     images.Image
		types   []string
		want    []string
		wantErr []string
	}{
		{"type served by a handler under another name", img, []string{"test.echo"}, []string{"test.echo"}, nil},
		{"several handlers' types", img, []string{"decompress.gzip", "test.sleep", "checksum"}, []string{"decompress.gzip", "test.sleep", "checksum"}, nil},
		{"no task_types: every type served", img, nil,
			[]string{"checksum", "compress.gzip", "decompress.gzip", "test.echo", "test.flaky", "test.sleep"}, nil},
		{"unknown type", img, []string{"test.echo", "test.nope"}, nil,
			[]string{`pool "p"`, "invalid task_types[1]", `"test.nope"`, "test.echo, test.flaky", img.Digest[:12]}},
		{"a handler name is no task type", img, []string{"testhandler"}, nil,
			[]string{`pool "p"`, "invalid task_types[0]", `"testhandler" is the name of a handler, not a task type`, "test.sleep"}},
		{"old manifest", old, []string{"test.echo"}, nil,
			[]string{`pool "p"`, "invalid image", "schema 1", "rebuild the image"}},
		{"old manifest, no task_types", old, nil, nil, []string{`pool "p"`, "invalid image", "schema 1", "rebuild"}},
		{"handler without recorded types", noTypes, nil, nil, []string{`pool "p"`, "invalid image", `handler "compress"`, "rebuild"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := poolCfg("p", 0, 1)
			c.TaskTypes = tc.types
			got, err := c.CheckImage(tc.img)
			if tc.wantErr == nil {
				if err != nil || !slices.Equal(got, tc.want) {
					t.Fatalf("CheckImage = %v, %v; want %v", got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckImage accepted it: %v", got)
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestScaleOnServedTypes: a pool without task_types scales for the backlog of every
// task type its image serves — here "echo", served by the handler named "tester" — and
// not for a backlog under a handler's name.
func TestScaleOnServedTypes(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("all", 0, 3)}})
	e.start()
	e.eventually("pool running", func() bool { st := e.m.Pools(); return len(st) == 1 && st[0].State == PoolRunning })
	if st := e.m.Pools()[0]; !slices.Equal(st.TaskTypes, []string{"checksum", "echo", "sleep"}) {
		t.Fatalf("pool task types %v, want the image's served types", st.TaskTypes)
	}
	e.backlog.Set("tester", 5) // a handler name, not a task type
	e.steady("no guest for a handler name", func() bool { return e.count("all") == 0 })
	e.backlog.Set("echo", 2)
	e.eventually("two guests for the echo backlog", func() bool { return e.count("all", StateIdle) == 2 })
	e.steady("no more", func() bool { return e.count("all") == 2 })
}

// TestMinIdle: a pool boots min_idle guests, each in its own 0755 directory, labelled
// with the pool and host, named prefix+pool+id; it boots no more.
func TestMinIdle(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("warm", 2, 4)}})
	e.start()
	e.eventually("two idle guests", func() bool { return e.count("warm", StateIdle) == 2 })
	e.steady("exactly two guests", func() bool { return e.count("warm") == 2 && e.domains() == 2 })
	doms, _ := e.hv.List(context.Background())
	for _, d := range doms {
		if !strings.HasPrefix(d.Name, "paddock-warm-") || len(d.Name) != len("paddock-warm-")+8 {
			t.Errorf("guest name %q, want paddock-warm-<8 hex>", d.Name)
		}
		if d.Labels[LabelPool] != "warm" || d.Labels[LabelHost] != "host-test" {
			t.Errorf("guest %s labels %v", d.Name, d.Labels)
		}
		fi, err := os.Stat(filepath.Join(e.runDir, d.Name))
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("guest dir of %s: %v %v, want mode 0755", d.Name, fi, err)
		}
	}
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_guests", map[string]string{"pool": "warm", "state": "idle"}); v != 2 {
		t.Errorf("paddock_vmpool_guests{state=idle} = %v, want 2", v)
	}
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_boot_duration_seconds", map[string]string{"pool": "warm"}); v != 2 {
		t.Errorf("boot duration histogram has %v samples, want 2", v)
	}
	st := e.m.Pools()
	if len(st) != 1 || st[0].State != PoolRunning || st[0].Image != e.img.Digest || !slices.Equal(st[0].TaskTypes, []string{"checksum", "echo", "sleep"}) {
		t.Errorf("Pools = %+v", st)
	}
	// Shutdown destroys every guest and removes its directory.
	e.stop()
	if n := e.domains(); n != 0 {
		t.Errorf("%d domains left after Run returned", n)
	}
	ents, _ := os.ReadDir(e.runDir)
	if len(ents) != 0 {
		t.Errorf("run dir still holds %d entries after Run returned", len(ents))
	}
}

// TestScaleUpDown: a backlog scales the pool up to max, never beyond; once it drains,
// idle guests are stopped after idle_timeout, never below min_idle.
func TestScaleUpDown(t *testing.T) {
	c := poolCfg("auto", 1, 3)
	c.TaskTypes = []string{"sleep"}
	e := newEnv(t, Config{Pools: []PoolConfig{c}})
	e.start()
	e.eventually("one warm guest", func() bool { return e.count("auto", StateIdle) == 1 })
	e.backlog.Set("checksum", 10) // a type the pool does not serve: no effect
	e.steady("one guest", func() bool { return e.count("auto") == 1 })
	e.backlog.Set("sleep", 5)
	e.eventually("max guests", func() bool { return e.count("auto", StateIdle) == 3 })
	e.steady("never above max", func() bool { return e.count("auto") == 3 && e.domains() == 3 })
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": "auto", "reason": BlockedAtMax}); v != 1 {
		t.Errorf("scale_up_blocked{reason=at_max} = %v, want 1", v)
	}
	// Tasks start in two guests; the backlog drains.
	idle := e.guestsIn("auto", StateIdle)
	for _, g := range idle[:2] {
		if err := e.m.TaskStarted(g); err != nil {
			t.Fatal(err)
		}
	}
	e.backlog.Set("sleep", 0)
	e.clock.Advance(59 * time.Second)
	e.steady("nothing stopped before idle_timeout", func() bool { return e.count("auto") == 3 })
	e.clock.Advance(2 * time.Second)
	// The one idle guest is the min_idle floor: it stays; the busy ones are not idle.
	e.steady("busy guests and the floor stay", func() bool { return e.count("auto") == 3 })
	for _, g := range idle[:2] {
		if err := e.m.TaskFinished(g); err != nil {
			t.Fatal(err)
		}
	}
	// The guest idle since the start is past idle_timeout and goes; the two that just
	// became idle wait for their own timeout.
	e.eventually("the long-idle guest stopped", func() bool { return e.count("auto") == 2 })
	e.steady("just-idle guests wait for their own idle_timeout", func() bool { return e.count("auto") == 2 })
	e.clock.Advance(61 * time.Second)
	e.eventually("back to min_idle", func() bool { return e.count("auto") == 1 && e.domains() == 1 })
	e.steady("never below min_idle", func() bool { return e.count("auto", StateIdle) == 1 })
}

// TestRecycle: max_tasks_per_vm 1 gives every task a fresh guest; 2 recycles after two.
func TestRecycle(t *testing.T) {
	for _, maxTasks := range []int{1, 2} {
		t.Run(map[int]string{1: "fresh guest per task", 2: "after two tasks"}[maxTasks], func(t *testing.T) {
			c := poolCfg("rc", 1, 2)
			c.MaxTasksPerVM = maxTasks
			e := newEnv(t, Config{Pools: []PoolConfig{c}})
			e.start()
			used := map[string]bool{}
			for task := 0; task < 4; task++ {
				e.eventually("an idle guest", func() bool { return e.count("rc", StateIdle) >= 1 })
				g := e.guestsIn("rc", StateIdle)[0]
				if maxTasks == 1 && used[g] {
					t.Fatalf("task %d got guest %s, which an earlier task used", task, g)
				}
				used[g] = true
				if err := e.m.TaskStarted(g); err != nil {
					t.Fatal(err)
				}
				if task%maxTasks == maxTasks-1 {
					if st := stateOf(e, g); st != StateDraining {
						t.Fatalf("guest %s after its last task started is %s, want draining", g, st)
					}
					if err := e.m.TaskStarted(g); !errors.Is(err, ErrState) {
						t.Fatalf("TaskStarted on a draining guest = %v, want ErrState", err)
					}
					// A draining guest is no spare: a fresh one boots while it works.
					e.eventually("a replacement while draining", func() bool { return e.count("rc", StateIdle) == 1 })
				}
				if err := e.m.TaskFinished(g); err != nil {
					t.Fatal(err)
				}
				if task%maxTasks == maxTasks-1 {
					e.eventually("the used guest destroyed", func() bool {
						_, err := e.hv.Lookup(context.Background(), g)
						return errors.Is(err, hypervisor.ErrNotFound) && stateOf(e, g) == ""
					})
				}
			}
			if want := 4 / maxTasks; len(used) != want {
				t.Fatalf("4 tasks used %d guests, want %d", len(used), want)
			}
			if v, _ := metricValue(t, e.reg, "paddock_vmpool_guests_recycled_total", map[string]string{"pool": "rc"}); v != float64(4/maxTasks) {
				t.Errorf("recycled_total = %v, want %d", v, 4/maxTasks)
			}
			if err := e.m.TaskStarted("paddock-nope-00000000"); !errors.Is(err, ErrNotFound) {
				t.Errorf("TaskStarted on an unknown guest = %v, want ErrNotFound", err)
			}
		})
	}
}

func stateOf(e *env, name string) GuestState {
	for _, g := range e.m.Snapshot() {
		if g.Name == name {
			return g.State
		}
	}
	return ""
}

// TestReplaceLost: a crashed guest, one destroyed from outside, one whose stream ends,
// and one that vanishes without an event are all replaced.
func TestReplaceLost(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("rp", 2, 3)}})
	e.start()
	ways := []struct {
		name, reason string
		do           func(g string)
	}{
		{"crash", "crashed", func(g string) { e.hv.Crash(g) }},
		{"virsh destroy", "stopped", func(g string) { e.hv.Kill(g) }},
		{"stream ends", "stream", func(g string) { e.conn.endStream(g) }},
	}
	lost := func(reason string) float64 {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_guests_lost_total", map[string]string{"pool": "rp", "reason": reason})
		return v
	}
	for _, w := range ways {
		e.eventually("two idle guests", func() bool { return e.count("rp", StateIdle) == 2 })
		victim := e.guestsIn("rp", StateIdle)[0]
		missing := lost("missing")
		w.do(victim)
		e.eventually(w.name+": victim gone and replaced", func() bool {
			return stateOf(e, victim) == "" && e.count("rp", StateIdle) == 2 && e.domains() == 2
		})
		// The list loop may see the domain gone before its event arrives: then the loss
		// is counted as "missing" (about 1 run in 40); either way it is counted once.
		if v, m := lost(w.reason), lost("missing")-missing; v+m != 1 || (v != 1 && w.reason == "stream") {
			t.Errorf("%s: guests_lost_total{reason=%s} = %v and {reason=missing} grew by %v; want the loss counted once", w.name, w.reason, v, m)
		}
		if _, err := os.Stat(filepath.Join(e.runDir, victim)); !os.IsNotExist(err) {
			t.Errorf("%s: directory of %s still there: %v", w.name, victim, err)
		}
	}
	if !strings.Contains(e.logs.String(), "guest lost") {
		t.Errorf("no 'guest lost' in the log")
	}
}

// TestBootBackoff: boots that keep failing are retried with exponential backoff (by
// the pool's clock), and a good boot resets it.
func TestBootBackoff(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("bo", 1, 2)}, BootBackoff: time.Second, MaxBootBackoff: 4 * time.Second})
	e.conn.set("fail")
	e.start()
	boots := func() float64 {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_boots_total", map[string]string{"pool": "bo"})
		return v
	}
	e.eventually("first boot failed", func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_boot_failures_total", map[string]string{"pool": "bo", "stage": "ready"})
		return v == 1
	})
	e.eventually("failed guest cleaned up", func() bool { return e.count("bo") == 0 && e.domains() == 0 })
	// Each wait doubles: 1s, 2s, 4s, then capped at 4s.
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		n := boots()
		e.clock.Advance(wait - 10*time.Millisecond)
		e.steady("no boot during the backoff", func() bool { return boots() == n })
		e.clock.Advance(10 * time.Millisecond)
		e.eventually("a boot after the backoff", func() bool { return boots() == n+1 })
		e.eventually("that boot failed", func() bool { return e.m.Pools()[0].BootFailures == i+2 })
	}
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": "bo", "reason": BlockedBackoff}); v != 1 {
		t.Errorf("scale_up_blocked{reason=boot_backoff} = %v, want 1", v)
	}
	e.conn.set("")
	e.clock.Advance(4 * time.Second)
	e.eventually("a good boot", func() bool { return e.count("bo", StateIdle) == 1 })
	if f := e.m.Pools()[0].BootFailures; f != 0 {
		t.Errorf("BootFailures after a good boot = %d, want 0", f)
	}
}

// TestBootTimeout: a guest that writes no ready line within boot_timeout is destroyed
// and counted as a failed boot; so is one that crashes while booting.
func TestBootTimeout(t *testing.T) {
	c := poolCfg("bt", 1, 1)
	c.BootTimeout = 30 * time.Millisecond
	e := newEnv(t, Config{Pools: []PoolConfig{c}})
	e.conn.set("hang")
	e.start()
	e.eventually("a boot timed out", func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_boot_failures_total", map[string]string{"pool": "bt", "stage": "ready"})
		return v == 1
	})
	e.eventually("its domain destroyed", func() bool { return e.domains() == 0 })
	if !strings.Contains(e.logs.String(), "no ready line within boot_timeout") {
		t.Errorf("log lacks the reason")
	}
	e.clock.Advance(time.Second)
	e.eventually("booting again", func() bool { return e.count("bt", StateBooting) == 1 && e.domains() == 1 })
	g := e.guestsIn("bt", StateBooting)[0]
	e.hv.Crash(g)
	e.eventually("crash while booting counted", func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_boot_failures_total", map[string]string{"pool": "bt", "stage": "stopped"})
		return v == 1
	})
}

// TestThresholdBlocksScaleUp: with the host above a threshold the pool keeps its
// min_idle floor but does not scale up for its backlog, and says why in the log and the
// metrics; once the load drops it scales up.
func TestThresholdBlocksScaleUp(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("th", 1, 3)}, Thresholds: hostloadCPU(50)})
	e.load.set(90)
	e.start()
	e.eventually("the floor guest", func() bool { return e.count("th", StateIdle) == 1 })
	e.backlog.Set("sleep", 4)
	e.eventually("blocked on cpu", func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": "th", "reason": "cpu"})
		return v == 1
	})
	e.steady("no scale-up while blocked", func() bool { return e.count("th") == 1 && e.domains() == 1 })
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked_total", map[string]string{"pool": "th", "reason": "cpu"}); v < 1 {
		t.Errorf("scale_up_blocked_total{reason=cpu} = %v", v)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "pool not scaling up") || !strings.Contains(logs, "reason=cpu") || !strings.Contains(logs, "cpu 90.0% above thresholds.cpu_percent 50%") {
		t.Errorf("log lacks the blocked reason:\n%s", logs)
	}
	if st := e.m.Pools()[0]; !slices.Equal(st.Blocked, []string{"cpu"}) || !strings.Contains(st.BlockedDetail, "cpu 90.0%") {
		t.Errorf("PoolStatus = %+v", st)
	}
	e.load.set(10)
	e.eventually("scaled up once the load dropped", func() bool { return e.count("th", StateIdle) == 3 })
	if v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": "th", "reason": "cpu"}); v != 0 {
		t.Errorf("scale_up_blocked{reason=cpu} = %v after the load dropped", v)
	}
	if !strings.Contains(e.logs.String(), "scale-up no longer blocked") {
		t.Errorf("log lacks the unblocking")
	}
}

// TestNoLoadSampleBlocks: thresholds without a load sample block with load_unknown.
func TestNoLoadSampleBlocks(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("nl", 0, 2)}, Thresholds: hostloadCPU(50)})
	e.backlog.Set("sleep", 1)
	e.start()
	e.eventually("blocked on load_unknown", func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": "nl", "reason": BlockedLoadUnknown})
		return v == 1
	})
	e.steady("no guest", func() bool { return e.count("nl") == 0 })
	e.load.set(1)
	e.eventually("a guest once load is known", func() bool { return e.count("nl", StateIdle) == 1 })
}

// TestBadPoolsDoNotStopGoodOnes: pools with bad fields, a missing image, too little
// memory for their image or a task type the image lacks are reported (log, Pools,
// paddock_vmpool_up 0) while the good pool runs.
func TestBadPoolsDoNotStopGoodOnes(t *testing.T) {
	bad1 := poolCfg("minmax", 3, 2)
	bad2 := poolCfg("noimage", 1, 1)
	bad2.Image = strings.Repeat("0", 64)
	bad3 := poolCfg("smallmem", 1, 1)
	bad3.MemoryMiB = 64
	bad4 := poolCfg("notype", 1, 1)
	bad4.TaskTypes = []string{"nope"}
	dup := poolCfg("good", 0, 1)
	good := poolCfg("good", 1, 2)
	bad5 := poolCfg("oldimage", 1, 1)
	bad5.Image = oldImageRef
	e := newEnv(t, Config{Pools: []PoolConfig{bad1, bad2, good, bad3, bad4, dup, bad5}})
	e.start()
	e.eventually("the good pool's guest", func() bool { return e.count("good", StateIdle) == 1 })
	want := map[int]string{
		0: `pool "minmax": invalid min_idle: 3 is more than max (2)`,
		1: `pool "noimage": invalid image`,
		3: `pool "smallmem": invalid memory`,
		4: `pool "notype": invalid task_types[0]`,
		5: `two pools are named "good"`,
		6: `pool "oldimage": invalid image: image`,
	}
	e.eventually("every bad pool reported", func() bool {
		st := e.m.Pools()
		for i, w := range want {
			if st[i].State != PoolError || !strings.Contains(st[i].Error, w) {
				return false
			}
		}
		return st[2].State == PoolRunning
	})
	if st := e.m.Pools()[1]; !strings.Contains(st.Error, "not found") {
		t.Errorf("missing image error %q does not say not found", st.Error)
	}
	for _, name := range []string{"minmax", "noimage", "smallmem", "notype", "oldimage"} {
		if v, ok := metricValue(t, e.reg, "paddock_vmpool_up", map[string]string{"pool": name}); !ok || v != 0 {
			t.Errorf("paddock_vmpool_up{pool=%s} = %v (%v), want 0", name, v, ok)
		}
		if !strings.Contains(e.logs.String(), `pool=`+name) {
			t.Errorf("log says nothing about pool %s", name)
		}
	}
	e.steady("only the good pool's guest", func() bool { return e.domains() == 1 })
}

// TestMissingImageRetried: a pool whose image appears later starts then.
func TestMissingImageRetried(t *testing.T) {
	dir := t.TempDir()
	store2, img2 := fakeImage(t, dir, "sleep", "other")
	p := poolCfg("late", 1, 1)
	p.Image = img2.Digest
	e := newEnv(t, Config{Pools: []PoolConfig{p}, RetryInterval: 10 * time.Millisecond})
	e.start()
	e.eventually("pool in error", func() bool { return e.m.Pools()[0].State == PoolError })
	// Copy the image into the manager's store.
	src := filepath.Join(store2.Dir(), img2.Digest)
	dst := filepath.Join(e.store.Dir(), img2.Digest)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{images.KernelFile, images.InitramfsFile, images.ManifestFile} {
		b, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(dst, f), b, 0o644)
	}
	e.eventually("pool running with a guest", func() bool { return e.count("late", StateIdle) == 1 })
}

// TestLeftoversDestroyedAtStart: domains a previous run of this host left are
// destroyed at start; those of another host id are not touched.
func TestLeftoversDestroyedAtStart(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("lo", 0, 1)}})
	dir := t.TempDir()
	mk := func(name, host string) {
		spec := hypervisor.DomainSpec{Name: name, VCPUs: 1, MemoryMiB: 128, Kernel: e.img.Kernel(), Initrd: e.img.Initrd(),
			Labels: map[string]string{LabelPool: "lo", LabelHost: host}}
		if _, err := e.hv.Create(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	mk("paddock-lo-11111111", "host-test")
	mk("paddock-lo-22222222", "another-host")
	os.MkdirAll(filepath.Join(e.runDir, "paddock-lo-11111111"), 0o755)
	os.WriteFile(filepath.Join(e.runDir, "not-ours.txt"), []byte("x"), 0o644)
	_ = dir
	e.start()
	e.eventually("leftover destroyed", func() bool {
		_, err := e.hv.Lookup(context.Background(), "paddock-lo-11111111")
		return errors.Is(err, hypervisor.ErrNotFound)
	})
	e.steady("other host's guest untouched", func() bool {
		_, err := e.hv.Lookup(context.Background(), "paddock-lo-22222222")
		return err == nil
	})
	if _, err := os.Stat(filepath.Join(e.runDir, "paddock-lo-11111111")); !os.IsNotExist(err) {
		t.Errorf("leftover directory still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.runDir, "not-ours.txt")); err != nil {
		t.Errorf("a file the Manager did not make was removed from run_dir: %v", err)
	}
	e.hv.Destroy(context.Background(), "paddock-lo-22222222")
}

// TestSnapshotAndGuestMetrics: Snapshot carries state, tasks, uptime and libvirt stats,
// and the per-guest metrics are exported.
func TestSnapshotAndGuestMetrics(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("sn", 1, 1)}})
	e.start()
	e.eventually("an idle guest", func() bool { return e.count("sn", StateIdle) == 1 })
	g := e.guestsIn("sn", StateIdle)[0]
	e.m.TaskStarted(g)
	e.clock.Advance(90 * time.Second)
	e.eventually("stats read", func() bool { return e.m.Snapshot()[0].HaveStats })
	s := e.m.Snapshot()[0]
	if s.Name != g || s.Pool != "sn" || s.State != StateBusy || s.TasksRun != 1 || s.Running != 1 || s.Uptime != 90*time.Second || s.AgentVersion != "test" || s.MemoryBytes != 256<<20 {
		t.Fatalf("Snapshot = %+v", s)
	}
	if _, ok := metricValue(t, e.reg, "paddock_guest_memory_bytes", map[string]string{"pool": "sn", "guest": g}); !ok {
		t.Errorf("no paddock_guest_memory_bytes for %s", g)
	}
	if _, ok := metricValue(t, e.reg, "paddock_guest_cpu_seconds_total", map[string]string{"pool": "sn", "guest": g}); !ok {
		t.Errorf("no paddock_guest_cpu_seconds_total for %s", g)
	}
	if problems, err := testutil.GatherAndLint(e.reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestReadyParsing covers ParseReady.
func TestReadyParsing(t *testing.T) {
	tests := []struct {
		in      string
		ok      bool
		version string
		ms      int64
	}{
		{"PADDOCK-AGENT READY version=v1.2.3 boot_ms=4567\n", true, "v1.2.3", 4567},
		{"PADDOCK-AGENT READY", true, "", 0},
		{"PADDOCK-AGENT SELFCHECK disk=/dev/vda", false, "", 0},
		{"garbage PADDOCK-AGENT READY", false, "", 0},
	}
	for _, tt := range tests {
		info, ok := ParseReady(tt.in)
		if ok != tt.ok || info.AgentVersion != tt.version || info.BootMS != tt.ms {
			t.Errorf("ParseReady(%q) = %+v, %v", tt.in, info, ok)
		}
	}
}

// TestOnlinePoolsFirst: an online and a batch pool both have a backlog while the host is
// above its thresholds; the batch pool reports online_first as well, and once the load
// drops the online pool boots its guests before the batch pool boots any. Online guests
// get the larger CPU share (cputune shares) in their domain spec.
func TestOnlinePoolsFirst(t *testing.T) {
	on, bt := poolCfg("on", 0, 2), poolCfg("bt", 0, 2)
	on.Class = ClassOnline
	e := newEnv(t, Config{Pools: []PoolConfig{bt, on}, Thresholds: hostloadCPU(50)})
	e.load.set(90)
	e.backlog.Set("sleep", 4)
	e.start()
	e.eventually("the batch pool waits for the online one", func() bool {
		v, _ := metricValue(t, e.reg, "paddock_vmpool_scale_up_blocked", map[string]string{"pool": "bt", "reason": BlockedOnlineFirst})
		return v == 1
	})
	e.load.set(10)
	e.eventually("both pools grown, the online one first", func() bool {
		nOn, nBt := e.count("on"), e.count("bt")
		if nBt > 0 && nOn < 2 {
			t.Fatalf("the batch pool booted %d guests while the online pool had %d of the 2 it wanted", nBt, nOn)
		}
		return nOn == 2 && nBt == 2
	})
	// A guest counted above may still wait for a start slot (booting, no domain yet):
	// wait until both pools have guests with domains, checking each one's shares.
	var seen map[string]int
	e.eventually("domains of both pools", func() bool {
		seen = map[string]int{}
		for _, g := range e.m.Snapshot() {
			spec, ok := e.hv.Spec(g.Name)
			if !ok {
				continue // no domain yet (waiting for a start slot), or destroyed since the snapshot
			}
			seen[g.Pool]++
			if want := map[string]int{"on": OnlineCPUShares, "bt": BatchCPUShares}[g.Pool]; spec.CPUShares != want {
				t.Errorf("guest %s of pool %s: cpu shares %d, want %d", g.Name, g.Pool, spec.CPUShares, want)
			}
		}
		return seen["on"] > 0 && seen["bt"] > 0
	})
	if err := (PoolConfig{Name: "x", Image: "abcd", MemoryMiB: 256, Max: 1, IdleTimeout: time.Minute, Class: "realtime"}).Validate(); err == nil || !strings.Contains(err.Error(), "class") {
		t.Errorf("class realtime: %v, want an error naming class", err)
	}
}

// TestCPUTimeWhileStatsHang: a guest's CPU time in Snapshot (what the host daemon
// sends the server as the sign that a silent guest still works) keeps coming while
// the full statistics hang, as libvirt's do with many starved guests.
func TestCPUTimeWhileStatsHang(t *testing.T) {
	e := newEnv(t, Config{Pools: []PoolConfig{poolCfg("cp", 1, 1)}, StatsInterval: time.Hour})
	release := e.hv.HoldStats()
	defer release()
	e.start()
	e.eventually("an idle guest", func() bool { return e.count("cp", StateIdle) == 1 })
	var first time.Duration
	e.eventually("a CPU time", func() bool { first = e.m.Snapshot()[0].CPUTime; return first > 0 })
	e.eventually("a later, larger CPU time", func() bool { return e.m.Snapshot()[0].CPUTime > first })
	if s := e.m.Snapshot()[0]; s.HaveStats {
		t.Fatalf("Snapshot has full statistics although Stats hangs: %+v", s)
	}
}

// TestStatsNames: the full statistics (which take each domain's libvirt job lock) are
// read only of guests that are up, never of one being booted, restored or stopped: a
// restore that found the lock held by the statistics failed.
func TestStatsNames(t *testing.T) {
	p := &pool{guests: map[string]*guest{
		"booting":   {state: StateBooting, created: true},
		"restoring": {state: StateIdle, created: true, restoring: true},
		"idle":      {state: StateIdle, created: true},
		"busy":      {state: StateBusy, created: true},
		"draining":  {state: StateDraining, created: true},
		"stopping":  {state: StateStopping, created: true},
		"uncreated": {state: StateIdle},
	}}
	got := p.statsNames()
	sort.Strings(got)
	if want := []string{"busy", "draining", "idle"}; !slices.Equal(got, want) {
		t.Errorf("statsNames() = %v, want %v", got, want)
	}
}
