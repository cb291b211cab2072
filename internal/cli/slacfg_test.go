package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

func TestOnlineSLAConfig(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     map[string]time.Duration
		wantErr  string
	}{
		{"default", "*=1s", map[string]time.Duration{"*": time.Second}, ""},
		{"several", "thumb=200ms, *=2s", map[string]time.Duration{"thumb": 200 * time.Millisecond, "*": 2 * time.Second}, ""},
		{"no duration", "thumb", nil, `"thumb"`},
		{"negative", "thumb=-1s", nil, "server.online_sla"},
		{"no type", "=1s", nil, "TYPE=DURATION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := viper.New()
			v.Set("server.online_sla", tc.in)
			got, err := onlineSLA(v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("onlineSLA(%q) = %v, %v; want an error naming %s", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("onlineSLA(%q) = %v, %v", tc.in, got, err)
			}
			for k, d := range tc.want {
				if got[k] != d {
					t.Fatalf("onlineSLA(%q)[%s] = %v, want %v", tc.in, k, got[k], d)
				}
			}
		})
	}
}
