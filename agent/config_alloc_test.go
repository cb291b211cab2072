package agent

import (
	"strings"
	"testing"
	"time"
)

// TestParseConfigAllocation covers the concurrency allocator's fields: each bad value
// is refused with an error naming the field.
func TestParseConfigAllocation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string
	}{
		{"full", `{"total_slots":8,"min_slots":{"a":2},"tolerable_delay":{"a":"250ms"},"default_tolerable_delay":"2s"}`, ""},
		{"negative total", `{"total_slots":-1}`, "field total_slots"},
		{"zero min", `{"min_slots":{"a":0}}`, `field min_slots["a"]`},
		{"mins over total", `{"total_slots":2,"min_slots":{"a":2,"b":1}}`, "add up to 3, more than total_slots 2"},
		{"bad delay", `{"tolerable_delay":{"a":"soon"}}`, `field tolerable_delay["a"]`},
		{"negative delay", `{"tolerable_delay":{"a":"-1s"}}`, `field tolerable_delay["a"]`},
		{"bad default delay", `{"default_tolerable_delay":"0s"}`, "field default_tolerable_delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseConfig(%s): %v", tc.in, err)
				}
				tol, def, err := cfg.tolerableDelays()
				if err != nil || tol["a"] != 250*time.Millisecond || def != 2*time.Second {
					t.Fatalf("tolerable delays %v %v %v", tol, def, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseConfig(%s) = %v, want error containing %q", tc.in, err, tc.wantErr)
			}
		})
	}
}
