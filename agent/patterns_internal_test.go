package agent

import (
	"strings"
	"testing"
)

// The patterns with their lengths checked apart keep the limits the counted
// repetitions had: ids 1-128, ports 1-64, sha256 exactly 64 hex digits.
func TestPatternLengths(t *testing.T) {
	tests := []struct {
		name string
		m    lenMatcher
		in   string
		want bool
	}{
		{"id of 128", idRE, "a" + strings.Repeat("b", 127), true},
		{"id of 129", idRE, "a" + strings.Repeat("b", 128), false},
		{"id empty", idRE, "", false},
		{"id with colon", idRE, "host:1", true},
		{"id starting with dot", idRE, ".x", false},
		{"port of 64", portRE, strings.Repeat("p", 64), true},
		{"port of 65", portRE, strings.Repeat("p", 65), false},
		{"port with colon", portRE, "org:x", false},
		{"sha256", sha256RE, strings.Repeat("0a", 32), true},
		{"sha256 short", sha256RE, strings.Repeat("0a", 31), false},
		{"sha256 long", sha256RE, strings.Repeat("0a", 33), false},
		{"sha256 upper case", sha256RE, strings.Repeat("0A", 32), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.m.MatchString(tc.in); got != tc.want {
				t.Errorf("MatchString(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
