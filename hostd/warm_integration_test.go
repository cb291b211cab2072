package hostd_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

// TestWarmStartTenClones: a pool with warm_start snapshot saves a template once; ten
// tasks on a pool with max_tasks_per_vm 1 then run in ten guests restored from that
// one snapshot. Each registers with the server under its own guest name (the server
// attests it), reports a different nonce drawn after its RNG was reseeded, and returns
// its task's payload unchanged.
//
//	sudo PADDOCK_REQUIRE_VM=1 go test -count=1 -run TestWarmStartTenClones -v ./hostd
func TestWarmStartTenClones(t *testing.T) {
	pool := "ws" + randHex(2)
	e := start(t, []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 0, Max: 10, IdleTimeout: time.Minute,
		MaxTasksPerVM: 1, TaskTypes: []string{"test.echo"}, WarmStart: vmpool.WarmSnapshot}}, hostload.Thresholds{})
	e.waitFor("the pool's snapshot", bootWait, func() bool {
		for _, p := range e.d.Manager().Pools() {
			if p.Name == pool && p.Snapshot == "ready" {
				return true
			}
		}
		return false
	})

	// Record every guest's warm-start facts while it lives (each runs one task, then
	// it is recycled).
	var (
		mu   sync.Mutex
		seen = map[string]vmpool.GuestInfo{}
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			for _, g := range e.d.Manager().Snapshot() {
				if g.Pool == pool && g.State != vmpool.StateBooting && g.AgentVersion != "" {
					mu.Lock()
					if _, ok := seen[g.Name]; !ok {
						seen[g.Name] = g
					}
					mu.Unlock()
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	const n = 10
	ids := map[string]string{}
	for i := range n {
		payload := fmt.Sprintf("clone-%d-%s", i, randHex(4))
		ids[e.submit("test.echo", payload)] = payload
	}
	agents := map[string]string{}
	for id, payload := range ids {
		got := e.wait(id, 8*time.Minute)
		if got.GetState() != paddockv1.State_STATE_SUCCEEDED {
			t.Fatalf("task %s: %v", id, got)
		}
		if string(got.GetOutput()) != payload {
			t.Errorf("task %s returned %q, want %q", id, got.GetOutput(), payload)
		}
		if prev, dup := agents[got.GetAgentId()]; dup {
			t.Errorf("tasks %s and %s both ran in agent %s (max_tasks_per_vm 1)", prev, id, got.GetAgentId())
		}
		agents[got.GetAgentId()] = id
	}
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	nonces := map[string]string{}
	for agent := range agents {
		g, ok := seen[agent]
		if !ok {
			t.Errorf("agent %s ran a task but was never seen as a ready guest of pool %s", agent, pool)
			continue
		}
		if !g.Restored || g.Nonce == "" {
			t.Errorf("guest %s was not restored from the snapshot (restored=%v nonce=%q)", agent, g.Restored, g.Nonce)
			continue
		}
		if other, dup := nonces[g.Nonce]; dup {
			t.Errorf("guests %s and %s drew the same nonce %s after restore", other, agent, g.Nonce)
		}
		nonces[g.Nonce] = agent
		t.Logf("guest %s restored, boot_time %v, nonce %s", agent, g.BootTime, g.Nonce)
	}
	if len(agents) != n {
		t.Errorf("%d distinct agents ran the %d tasks, want %d", len(agents), n, n)
	}
}
