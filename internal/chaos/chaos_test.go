package chaos

import (
	"testing"
	"time"

	"github.com/paddockvm/paddock/internal/testutil"
)

// TestChaosAgents runs tasks through the server and TCP agents while it kills, at
// random, the server, agents and handler processes (kill -9), restarting the server and
// agents after a random delay; then checks every task ended once, with its own output,
// and nothing was left running.
func TestChaosAgents(t *testing.T) {
	p := loadParams(t, params{Tasks: 1200, Kills: 2, Agents: 3, Rate: 20, Settle: 3 * time.Minute,
		MaxDown: 3 * time.Second, MaxSleep: time.Second})
	r := newRun(t, p)
	r.execute([]string{kindServer, kindAgent, kindHandler})
}

// TestChaosVM adds the host daemon and a pool of TCG guests to TestChaosAgents: it
// also kills the host daemon (restarted after a random delay) and destroys guests
// (virsh destroy; the daemon boots replacements), and checks at the end that no guest
// with the run's prefix is left.
func TestChaosVM(t *testing.T) {
	uri := testutil.RequireLibvirt(t)
	testutil.RequireKernel(t)
	p := loadParams(t, params{Tasks: 1500, Kills: 2, Agents: 2, Guests: 1, Rate: 15, Settle: 5 * time.Minute,
		MaxDown: 3 * time.Second, MaxSleep: time.Second})
	if p.Guests < 1 {
		t.Fatalf("PADDOCK_CHAOS_GUESTS=%d: the VM test needs at least 1 guest", p.Guests)
	}
	r := newRun(t, p)
	r.startHost(uri)
	r.execute([]string{kindServer, kindAgent, kindHandler, kindHost, kindGuest})
}
