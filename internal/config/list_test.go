package config

import (
	"slices"
	"testing"

	"github.com/spf13/viper"
)

func TestList(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want []string
	}{
		{"one", "127.0.0.1:7070", []string{"127.0.0.1:7070"}},
		{"commas", "a:1, b:2,,c:3 ", []string{"a:1", "b:2", "c:3"}},
		{"yaml list", []any{"a:1", "b:2"}, []string{"a:1", "b:2"}},
		{"flag slice", []string{"a:1,b:2", "c:3"}, []string{"a:1", "b:2", "c:3"}},
		{"empty", "", nil},
		{"unset", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := viper.New()
			if tt.in != nil {
				v.Set("client.server", tt.in)
			}
			if got := List(v, "client.server"); !slices.Equal(got, tt.want) {
				t.Errorf("List(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
