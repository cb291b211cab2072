package sched

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/sched/store"
)

// localityServer is a server with two connected hosts h1 and h2 holding the guests
// h1-g and h2-g (1 echo slot each, the shared data path), for pickNear's logic on a
// simulated clock.
func localityServer(t *testing.T, delay time.Duration) *Server {
	fs, err := blob.OpenFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{LocalityDelay: delay, Blobs: fs}, agents: newAgentRegistry(), hosts: newHostRegistry()}
	s.metrics = newMetrics(s)
	for _, h := range []string{"h1", "h2"} {
		s.hosts.hosts[h] = &hostRec{id: h, state: hostConnected, caps: map[string]bool{CapStage: true}}
		a := testAgent(h+"-g", func(a *agent) { a.types["echo"].slots = 1 })
		a.hostID = h
		s.agents.add(a)
	}
	return s
}

func inputTask(id, digest string) *store.Task {
	return &store.Task{ID: id, Type: "echo", InputBlobs: map[string]store.BlobRef{"in": {Digest: digest, Size: 32 << 20}}}
}

// TestLocalityNeverStarves: a task whose input only h1 holds, while h1 stays full and
// launches another task every delay/2 (so it is never stuck), lets h2's free slot go
// for a while but takes it within maxLocalityWait delays of the first time it let it go;
// time it spent queued while every slot was taken does not count.
func TestLocalityNeverStarves(t *testing.T) {
	const delay = 100 * time.Millisecond
	s := localityServer(t, delay)
	s.hosts.noteCached("h1", inputTask("", "sha256:a").InputBlobs, time.Unix(0, 0))
	s.hosts.hosts["h1"].cached["sha256:a"] = cachedEntry{} // listed by h1's summary
	busy(1)(s.agents.byID["h1-g"])
	x := inputTask("x", "sha256:a")
	now := time.Unix(1000, 0)
	// Queued for a minute while every slot was taken: no wait for locality yet.
	busy(1)(s.agents.byID["h2-g"])
	for i := 0; i < 60; i++ {
		if a := s.pickNear(x, now); a != nil {
			t.Fatalf("picked %s with every slot taken", a.id)
		}
		now = now.Add(time.Second)
	}
	s.agents.byID["h2-g"].release("h2-g-run0", 0)
	first := now
	var got *agent
	for now.Sub(first) <= 2*maxLocalityWait*delay {
		s.hosts.hosts["h1"].lastLaunch = now // h1 keeps launching other tasks
		if got = s.pickNear(x, now); got != nil {
			break
		}
		if !s.agents.localWait["echo"] {
			t.Fatal("the task waited without marking its type for a wider scan")
		}
		now = now.Add(delay / 2)
	}
	switch waited := now.Sub(first); {
	case got == nil:
		t.Fatalf("the task still waited for h1 %v after h2's slot came free: starved (bound %v)", waited, maxLocalityWait*delay)
	case got.id != "h2-g":
		t.Fatalf("picked %s; want h2-g (the only free slot)", got.id)
	case waited > maxLocalityWait*delay:
		t.Fatalf("the task let h2's slot go for %v; want at most %v", waited, maxLocalityWait*delay)
	case waited < delay:
		t.Fatalf("the task took h2's slot after %v while h1 kept launching; want a wait of at least the delay %v", waited, delay)
	}
	if _, ok := s.agents.passedOver["x"]; ok {
		t.Error("the placed task is still in passedOver")
	}
}

// TestLocalityWait: the delay-scheduling decisions, one step each on a simulated clock.
func TestLocalityWait(t *testing.T) {
	const delay = 100 * time.Millisecond
	t0 := time.Unix(1000, 0)
	t.Run("local slot free: taken at once", func(t *testing.T) {
		s := localityServer(t, delay)
		s.hosts.noteCached("h2", inputTask("", "sha256:a").InputBlobs, t0)
		if a := s.pickNear(inputTask("x", "sha256:a"), t0); a == nil || a.id != "h2-g" {
			t.Fatalf("picked %v; want h2-g, the host holding the input", a)
		}
	})
	t.Run("local host stuck: free slot elsewhere after one delay", func(t *testing.T) {
		s := localityServer(t, delay)
		s.hosts.noteCached("h1", inputTask("", "sha256:a").InputBlobs, t0)
		busy(1)(s.agents.byID["h1-g"])
		x := inputTask("x", "sha256:a")
		if a := s.pickNear(x, t0); a != nil {
			t.Fatalf("picked %s at once; want a wait for h1", a.id)
		}
		if a := s.pickNear(x, t0.Add(delay/2)); a != nil {
			t.Fatalf("picked %s after half a delay; want a wait for h1", a.id)
		}
		if a := s.pickNear(x, t0.Add(delay)); a == nil || a.id != "h2-g" {
			t.Fatalf("picked %v after a delay without a launch on h1; want h2-g", a)
		}
	})
	t.Run("a slow fetch elsewhere: waits about as long as that fetch", func(t *testing.T) {
		s := localityServer(t, delay)
		s.hosts.placedAt = map[string]time.Time{"y": t0}
		s.hosts.fetchMeasured("h2", &hostv1.Staged{TaskId: "y", FetchedBytes: 32 << 20}, t0.Add(time.Second)) // 32 MiB/s
		s.hosts.noteCached("h1", inputTask("", "sha256:a").InputBlobs, t0)
		busy(1)(s.agents.byID["h1-g"])
		x := inputTask("x", "sha256:a") // 32 MiB: a second's fetch on h2
		for _, at := range []time.Duration{0, delay, 900 * time.Millisecond} {
			if a := s.pickNear(x, t0.Add(at)); a != nil {
				t.Fatalf("picked %s after %v; want a wait for h1 while a fetch on h2 would take 1s", a.id, at)
			}
		}
		if a := s.pickNear(x, t0.Add(time.Second)); a == nil || a.id != "h2-g" {
			t.Fatalf("picked %v after 1s; want h2-g", a)
		}
	})
	t.Run("new input: the host caching fewer blobs, and the next task follows", func(t *testing.T) {
		s := localityServer(t, delay)
		for i := range 3 {
			s.hosts.noteCached("h1", inputTask("", fmt.Sprintf("sha256:old%d", i)).InputBlobs, t0)
		}
		s.hosts.noteCached("h2", inputTask("", "sha256:old").InputBlobs, t0)
		s.agents.byID["h1-g"].types["echo"].slots = 2
		s.agents.byID["h2-g"].types["echo"].slots = 2
		a := s.pickNear(inputTask("x", "sha256:new"), t0)
		if a == nil || a.id != "h2-g" {
			t.Fatalf("picked %v for a new input; want h2-g (1 blob cached, h1 3)", a)
		}
		a.reserve("x", "echo")
		// Same round: the input is noted on h2 at pick time, so the next task of it goes
		// there too, even with h2 now caching more blobs than h1 (the note decides).
		for i := range 5 {
			s.hosts.noteCached("h2", inputTask("", fmt.Sprintf("sha256:more%d", i)).InputBlobs, t0)
		}
		if a := s.pickNear(inputTask("y", "sha256:new"), t0); a == nil || a.id != "h2-g" {
			t.Fatalf("picked %v for the second task of the input; want h2-g, where the first went", a)
		}
	})
	t.Run("new input, its host full: one delay at most", func(t *testing.T) {
		s := localityServer(t, delay)
		s.hosts.noteCached("h1", inputTask("", "sha256:old").InputBlobs, t0)
		busy(1)(s.agents.byID["h2-g"])
		x := inputTask("x", "sha256:new")
		if a := s.pickNear(x, t0); a != nil {
			t.Fatalf("picked %s at once; want a wait for h2 (fewer blobs)", a.id)
		}
		s.hosts.hosts["h2"].lastLaunch = t0.Add(delay / 2) // launches on h2 do not extend a new input's wait
		if a := s.pickNear(x, t0.Add(delay)); a == nil || a.id != "h1-g" {
			t.Fatalf("picked %v after a delay; want h1-g", a)
		}
	})
	t.Run("off: no waiting", func(t *testing.T) {
		s := localityServer(t, -1)
		s.hosts.noteCached("h1", inputTask("", "sha256:a").InputBlobs, t0)
		busy(1)(s.agents.byID["h1-g"])
		if a := s.pickNear(inputTask("x", "sha256:a"), t0); a == nil || a.id != "h2-g" {
			t.Fatalf("picked %v with locality off; want h2-g at once", a)
		}
	})
}
