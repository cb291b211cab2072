package sched

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/sched/store"
)

func testLink() *hostLink {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &hostLink{out: make(chan *hostv1.ServerMessage, 8), ctx: ctx, cancel: cancel}
}

// TestHostRegistryLinks: a host's control stream is its link until the host opens
// another (which cancels the old one) or loses it; messages go only to its current link.
func TestHostRegistryLinks(t *testing.T) {
	r := newHostRegistry()
	reg := &hostv1.Register{HostId: "h1", Pools: []*hostv1.Pool{{Name: "p", MaxTasksPerVm: 3}}, Capabilities: []string{CapStage}}
	old := testLink()
	h := r.register("h1", reg, old, time.Unix(1, 0))
	if !r.linked("h1") || !r.anyLinked() || !r.stages("h1") || r.maxTasks("h1", "p") != 3 {
		t.Fatalf("after register: linked %v, any %v, stages %v, max tasks %d; want true, true, true, 3",
			r.linked("h1"), r.anyLinked(), r.stages("h1"), r.maxTasks("h1", "p"))
	}
	cur := testLink()
	if r.register("h1", reg, cur, time.Unix(2, 0)) != h {
		t.Fatal("a second register of the same host made a new record")
	}
	if context.Cause(old.ctx) != errHostReplaced {
		t.Errorf("old link's cause %v; want %v", context.Cause(old.ctx), errHostReplaced)
	}
	m := &hostv1.ServerMessage{}
	if r.sendOn(h, old, m) {
		t.Error("sendOn the replaced link sent")
	}
	if r.disconnect(h, old, time.Unix(3, 0)) {
		t.Error("disconnect of the replaced link disconnected the host")
	}
	if !r.sendOn(h, cur, m) || len(cur.out) != 1 {
		t.Errorf("sendOn the current link: %d queued; want 1", len(cur.out))
	}
	r.send("h1", m)
	r.send("nohost", m)
	if len(cur.out) != 2 {
		t.Errorf("send: %d queued on the current link; want 2", len(cur.out))
	}
	if !r.disconnect(h, cur, time.Unix(4, 0)) {
		t.Fatal("disconnect of the current link did nothing")
	}
	if r.linked("h1") || r.anyLinked() || h.state != hostLost || !h.lostAt.Equal(time.Unix(4, 0)) {
		t.Errorf("after disconnect: linked %v, any %v, state %q, lost at %v", r.linked("h1"), r.anyLinked(), h.state, h.lostAt)
	}
	r.send("h1", m) // no link: dropped
	if len(cur.out) != 2 {
		t.Errorf("send to a host without a link queued a message")
	}
}

func TestHostRegistryMaxTasks(t *testing.T) {
	r := newHostRegistry()
	r.register("h1", &hostv1.Register{Pools: []*hostv1.Pool{{Name: "p", MaxTasksPerVm: 3}, {Name: "q"}}}, testLink(), time.Now())
	for _, tc := range []struct {
		name, host, pool string
		want             int
	}{
		{"pool with a max", "h1", "p", 3},
		{"pool without", "h1", "q", 0},
		{"unknown pool", "h1", "x", 0},
		{"unknown host", "h2", "p", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.maxTasks(tc.host, tc.pool); got != tc.want {
				t.Errorf("maxTasks(%q, %q) = %d; want %d", tc.host, tc.pool, got, tc.want)
			}
		})
	}
}

// TestHostRegistryLocalBytes: the bytes of a task's inputs each connected host holds.
func TestHostRegistryLocalBytes(t *testing.T) {
	task := &store.Task{InputBlobs: map[string]store.BlobRef{"a": {Digest: "da", Size: 100}, "b": {Digest: "db", Size: 0}, "c": {Digest: "dc", Size: 7}}}
	for _, tc := range []struct {
		name  string
		hosts map[string][]string // connected host -> digests it holds
		lost  string              // a host that holds every digest but is lost
		want  map[string]int64
	}{
		{"nobody holds any", map[string][]string{"h1": {"dx"}}, "", nil},
		{"one host", map[string][]string{"h1": {"da"}, "h2": nil}, "", map[string]int64{"h1": 100}},
		{"an empty blob counts one byte", map[string][]string{"h1": {"db"}}, "", map[string]int64{"h1": 1}},
		{"sums per host", map[string][]string{"h1": {"da", "dc"}, "h2": {"dc"}}, "", map[string]int64{"h1": 107, "h2": 7}},
		{"lost host left out", map[string][]string{"h1": {"dc"}}, "h9", map[string]int64{"h1": 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newHostRegistry()
			now := time.Unix(1, 0)
			for id, ds := range tc.hosts {
				h := r.register(id, &hostv1.Register{}, testLink(), now)
				h.setCacheSummary(ds, now)
			}
			if tc.lost != "" {
				l := testLink()
				h := r.register(tc.lost, &hostv1.Register{}, l, now)
				h.setCacheSummary([]string{"da", "db", "dc"}, now)
				r.disconnect(h, l, now)
			}
			if got := r.localBytes(task); !maps.Equal(got, tc.want) {
				t.Errorf("localBytes = %v; want %v", got, tc.want)
			}
			sizes := r.cacheSizes()
			for id, ds := range tc.hosts {
				if sizes[id] != len(ds) {
					t.Errorf("cacheSizes[%s] = %d; want %d", id, sizes[id], len(ds))
				}
			}
			if _, ok := sizes[tc.lost]; ok && tc.lost != "" {
				t.Errorf("cacheSizes lists lost host %s", tc.lost)
			}
		})
	}
}

// TestHostRegistryLaunched: a placement records the host's launch; only where the host
// stages the inputs are they noted in its cache and the placement timed.
func TestHostRegistryLaunched(t *testing.T) {
	task := inputTask("t1", "sha256:a")
	for _, shared := range []bool{false, true} {
		r := newHostRegistry()
		h := r.register("h1", &hostv1.Register{}, testLink(), time.Unix(0, 0))
		now := time.Unix(10, 0)
		r.launched("h1", task, now, shared)
		_, cached := h.cached["sha256:a"]
		_, timed := r.placedAt["t1"]
		if !h.lastLaunch.Equal(now) || cached != shared || timed != shared {
			t.Errorf("shared %v: last launch %v, cached %v, timed %v; want %v, %v, %v", shared, h.lastLaunch, cached, timed, now, shared, shared)
		}
		if got := r.lastLaunchSince(map[string]int64{"h1": 1}, time.Unix(5, 0)); !got.Equal(now) {
			t.Errorf("lastLaunchSince = %v; want %v", got, now)
		}
		if got := r.lastLaunchSince(map[string]int64{"h1": 1}, time.Unix(20, 0)); !got.Equal(time.Unix(20, 0)) {
			t.Errorf("lastLaunchSince a later time = %v; want that time", got)
		}
	}
}

// TestHostRegistryFetchMeasured: a Staged report of a timed placement measures the
// host's fetch rate (the first sample as is, later ones as a moving average); reports
// that cannot measure it leave it alone, and each placement is measured once.
func TestHostRegistryFetchMeasured(t *testing.T) {
	const mib = 1 << 20
	at := time.Unix(100, 0)
	for _, tc := range []struct {
		name      string
		placed    bool    // the task's placement was timed
		rate      float64 // the host's rate before
		staged    *hostv1.Staged
		after     time.Duration
		wantRate  float64
		wantTimed bool // the placement is still timed after the report
	}{
		{"first sample", true, 0, &hostv1.Staged{TaskId: "t", FetchedBytes: 32 * mib}, time.Second, 32 * mib, false},
		{"moving average", true, 10 * mib, &hostv1.Staged{TaskId: "t", FetchedBytes: 20 * mib}, time.Second, 13 * mib, false},
		{"not timed", false, 10 * mib, &hostv1.Staged{TaskId: "t", FetchedBytes: 20 * mib}, time.Second, 10 * mib, false},
		{"failed staging", true, 10 * mib, &hostv1.Staged{TaskId: "t", FetchedBytes: 20 * mib, Error: "no space"}, time.Second, 10 * mib, false},
		{"too small to measure", true, 10 * mib, &hostv1.Staged{TaskId: "t", FetchedBytes: minRateSample - 1}, time.Second, 10 * mib, false},
		{"report before placement", true, 10 * mib, &hostv1.Staged{TaskId: "t", FetchedBytes: 20 * mib}, 0, 10 * mib, false},
		{"another task", true, 10 * mib, &hostv1.Staged{TaskId: "u", FetchedBytes: 20 * mib}, time.Second, 10 * mib, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newHostRegistry()
			h := r.register("h1", &hostv1.Register{}, testLink(), at)
			h.fetchRate = tc.rate
			if tc.placed {
				r.placedAt = map[string]time.Time{"t": at}
			}
			r.fetchMeasured("h1", tc.staged, at.Add(tc.after))
			if d := h.fetchRate - tc.wantRate; d > 1 || d < -1 {
				t.Errorf("rate %.0f; want %.0f", h.fetchRate, tc.wantRate)
			}
			if _, ok := r.placedAt["t"]; ok != tc.wantTimed {
				t.Errorf("placement still timed: %v; want %v", ok, tc.wantTimed)
			}
			if tc.wantTimed {
				want := r.fetchTime("h1", &store.Task{InputBlobs: map[string]store.BlobRef{"x": {Digest: "dx", Size: int64(tc.rate)}}})
				if want != time.Second {
					t.Errorf("fetchTime of rate bytes = %v; want 1s", want)
				}
			}
		})
	}
}

// TestAgentRegistryConns: an agent-port connection is bound to the agent whose
// session runs on it; an ended session unbinds it only if no newer session took it.
func TestAgentRegistryConns(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  func(r *agentRegistry)
		want string
	}{
		{"none", func(r *agentRegistry) {}, ""},
		{"bound", func(r *agentRegistry) { r.bind("c", "a") }, "a"},
		{"unbound", func(r *agentRegistry) { r.bind("c", "a"); r.unbind("c", "a") }, ""},
		{"rebound, the old session ends", func(r *agentRegistry) { r.bind("c", "a"); r.bind("c", "b"); r.unbind("c", "a") }, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newAgentRegistry()
			tc.ops(r)
			if got := r.boundTo("c"); got != tc.want {
				t.Errorf("boundTo = %q; want %q", got, tc.want)
			}
		})
	}
}

// TestAgentRegistryAddDrop: add files an agent in the registry and the index; drop
// removes it from both.
func TestAgentRegistryAddDrop(t *testing.T) {
	r := newAgentRegistry()
	a := testAgent("a")
	r.add(a)
	if r.byID["a"] != a || r.index.freeSlots()["echo"] != 4 {
		t.Fatalf("after add: registered %v, free echo slots %d; want the agent and 4", r.byID["a"] != nil, r.index.freeSlots()["echo"])
	}
	r.drop(a)
	if r.byID["a"] != nil || r.index.freeSlots()["echo"] != 0 || a.index != nil {
		t.Errorf("after drop: registered %v, free echo slots %d, indexed %v; want none", r.byID["a"] != nil, r.index.freeSlots()["echo"], a.index != nil)
	}
}

// TestHostVouched: a host vouches for a guest only while its control stream is up,
// its Status is fresh (three statistics intervals, at least the floor), and the guest
// is listed, not stopping, with a CPU time that rose since an earlier Status.
func TestHostVouched(t *testing.T) {
	r := newHostRegistry()
	t0 := time.Unix(1000, 0)
	link := testLink()
	h := r.register("h1", &hostv1.Register{HostId: "h1", StatsIntervalMs: 1000}, link, t0)
	status := func(at time.Duration, gs ...*hostv1.Guest) { r.status(h, &hostv1.Status{Guests: gs}, t0.Add(at)) }
	g := func(name, state string, cpu int64) *hostv1.Guest {
		return &hostv1.Guest{Name: name, State: state, CpuTimeMs: cpu}
	}
	floor := time.Second // fresh = max(floor, 3 × 1 s) = 3 s
	steps := []struct {
		name   string
		at     time.Duration // status sent at t0 + at (none if nil guests and !send)
		send   bool
		guests []*hostv1.Guest
		check  time.Duration // vouched asked at t0 + check
		guest  string
		want   bool
	}{
		{"first sighting is no progress", 0, true, []*hostv1.Guest{g("a", "busy", 100), g("b", "idle", 50)}, 0, "a", false},
		{"CPU time rose", time.Second, true, []*hostv1.Guest{g("a", "busy", 150), g("b", "idle", 50)}, time.Second, "a", true},
		{"CPU time flat since the first sighting", 0, false, nil, time.Second, "b", false},
		{"within three intervals of the rise", 2 * time.Second, true, []*hostv1.Guest{g("a", "busy", 150), g("b", "idle", 50)}, 3500 * time.Millisecond, "a", true},
		{"more than three intervals after the rise", 0, false, nil, 4500 * time.Millisecond, "a", false},
		{"rose again", 5 * time.Second, true, []*hostv1.Guest{g("a", "busy", 170), g("b", "stopping", 60)}, 5 * time.Second, "a", true},
		{"stopping guests are not vouched for", 0, false, nil, 5 * time.Second, "b", false},
		{"an unknown guest", 0, false, nil, 5 * time.Second, "zz", false},
		{"a guest dropped from the list", 6 * time.Second, true, []*hostv1.Guest{g("b", "idle", 70)}, 6 * time.Second, "a", false},
		{"a CPU time lower than before (a new guest by the same name) is no rise", 7 * time.Second, true, []*hostv1.Guest{g("b", "idle", 10)}, 7*time.Second + 9*time.Second, "b", false},
	}
	for _, s := range steps {
		if s.send {
			status(s.at, s.guests...)
		}
		if got := r.vouched("h1", s.guest, t0.Add(s.check), floor); got != s.want {
			t.Fatalf("%s: vouched(%s) = %v, want %v", s.name, s.guest, got, s.want)
		}
	}
	// Why not, for the log: each refusal says what the host's statuses lacked.
	for _, c := range []struct {
		guest string
		at    time.Duration
		want  string
	}{
		{"zz", 7 * time.Second, "does not list the guest"},
		{"b", 9500 * time.Millisecond, "CPU time last rose 3.5s ago"},
		{"b", 20 * time.Second, "last status is 13s old"},
	} {
		if ok, why := r.vouch("h1", c.guest, t0.Add(c.at), floor); ok || !strings.Contains(why, c.want) {
			t.Fatalf("vouch(%s) at %v = %v, %q; want false, saying %q", c.guest, c.at, ok, why, c.want)
		}
	}
	status(8*time.Second, g("b", "idle", 80))
	if !r.vouched("h1", "b", t0.Add(8*time.Second), floor) {
		t.Fatal("b's CPU time rose: want vouched")
	}
	if r.vouched("h2", "b", t0.Add(8*time.Second), floor) {
		t.Fatal("an unknown host vouched")
	}
	r.disconnect(h, link, t0.Add(8*time.Second))
	if r.vouched("h1", "b", t0.Add(8*time.Second), floor) {
		t.Fatal("a host without its control stream vouched")
	}
}
