package chaos

import (
	"testing"
	"time"
)

// TestChaosAgents runs tasks through the server and TCP agents while it kills, at
// random, the server, agents and handler processes (kill -9), restarting the server and
// agents after a random delay; then checks every task ended once, with its own output,
// and nothing was left running.
func TestChaosAgents(t *testing.T) {
	p := loadParams(t, params{Tasks: 1200, Kills: 2, Agents: 3, Rate: 20, Settle: 3 * time.Minute,
		MaxDown: 3 * time.Second, MaxSleep: 150 * time.Millisecond})
	r := newRun(t, p)
	r.execute([]string{kindServer, kindAgent, kindHandler})
}
