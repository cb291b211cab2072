package config

import (
	"fmt"
	"strings"

	"github.com/spf13/viper"
)

// List returns the value of a key that names one or more servers: a YAML list, or a
// string holding one value or several separated by commas (from a flag, an environment
// variable or the file). Blanks around each element are dropped, and so are empty ones.
// A single value keeps working as before: "127.0.0.1:7070" is a list of one.
func List(v *viper.Viper, key string) []string {
	var parts []string
	switch x := v.Get(key).(type) {
	case nil:
	case string:
		parts = strings.Split(x, ",")
	case []string:
		for _, s := range x {
			parts = append(parts, strings.Split(s, ",")...)
		}
	case []any:
		for _, s := range x {
			parts = append(parts, strings.Split(fmt.Sprint(s), ",")...)
		}
	default:
		parts = strings.Split(fmt.Sprint(x), ",")
	}
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
