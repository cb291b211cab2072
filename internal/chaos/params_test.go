package chaos

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// params are the figures of one chaos run. Each has an environment variable
// PADDOCK_CHAOS_<NAME> that overrides the test's default.
type params struct {
	Tasks  int     // tasks submitted (TASKS)
	Kills  int     // kills of each component kind at least (KILLS)
	Agents int     // TCP agents (AGENTS)
	Guests int     // the guest pool's size, min_idle = max (GUESTS; the VM test only)
	Rate   float64 // tasks submitted per second (RATE): the kills happen while they go in
	Seed   int64   // random seed (SEED; default: the time)
	// Settle bounds the wait, after the last submission and kill, for every task to
	// end (SETTLE, a Go duration).
	Settle time.Duration
	// MaxDown is the longest a killed component stays down before its restart
	// (MAX_DOWN, a Go duration); each restart waits a random time up to it.
	MaxDown time.Duration
	// MaxSleep is the longest test.sleep a task asks for (MAX_SLEEP).
	MaxSleep time.Duration
}

func (p params) window() time.Duration {
	return time.Duration(float64(p.Tasks) / p.Rate * float64(time.Second))
}

func (p params) String() string {
	return fmt.Sprintf("tasks=%d kills=%d agents=%d guests=%d rate=%.0f/s window=%v seed=%d settle=%v max_down=%v max_sleep=%v",
		p.Tasks, p.Kills, p.Agents, p.Guests, p.Rate, p.window().Round(time.Second), p.Seed, p.Settle, p.MaxDown, p.MaxSleep)
}

// loadParams overrides def with the PADDOCK_CHAOS_* variables that are set.
func loadParams(t *testing.T, def params) params {
	t.Helper()
	p := def
	p.Seed = time.Now().UnixNano()
	ints := map[string]*int{"TASKS": &p.Tasks, "KILLS": &p.Kills, "AGENTS": &p.Agents, "GUESTS": &p.Guests}
	for name, dst := range ints {
		if s := os.Getenv("PADDOCK_CHAOS_" + name); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				t.Fatalf("PADDOCK_CHAOS_%s=%q: want a whole number ≥ 0", name, s)
			}
			*dst = v
		}
	}
	durs := map[string]*time.Duration{"SETTLE": &p.Settle, "MAX_DOWN": &p.MaxDown, "MAX_SLEEP": &p.MaxSleep}
	for name, dst := range durs {
		if s := os.Getenv("PADDOCK_CHAOS_" + name); s != "" {
			v, err := time.ParseDuration(s)
			if err != nil || v < 0 {
				t.Fatalf("PADDOCK_CHAOS_%s=%q: want a Go duration like \"90s\"", name, s)
			}
			*dst = v
		}
	}
	if s := os.Getenv("PADDOCK_CHAOS_RATE"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			t.Fatalf("PADDOCK_CHAOS_RATE=%q: want tasks per second > 0", s)
		}
		p.Rate = v
	}
	if s := os.Getenv("PADDOCK_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("PADDOCK_CHAOS_SEED=%q: want an integer", s)
		}
		p.Seed = v
	}
	if p.Tasks < 1 || p.Agents < 1 {
		t.Fatalf("chaos params %v: want at least 1 task (PADDOCK_CHAOS_TASKS) and 1 agent (PADDOCK_CHAOS_AGENTS)", p)
	}
	return p
}
