package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/viper"

	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/sched/tenant"
)

func init() {
	config.RegisterMap("tenants", "per-tenant settings: tenants.<name>.weight (share of slots, default 1), max_running, max_queued, max_blob_bytes (0: no limit)")
	for _, k := range []struct{ name, what string }{
		{"cpu_second", "a CPU-second of handler time"},
		{"gib_second", "a GiB-second of guest memory (memory × wall time)"},
		{"gib_moved", "a GiB of blob bytes moved (inputs fetched, outputs written)"},
	} {
		config.Register(config.Key{Name: "server.prices." + k.name, Default: "",
			Usage: "price of " + k.what + ", for paddock usage; empty: no cost is computed"})
	}
}

// tenantsExample ends paddock config example: the tenants map, commented out (no
// tenant is configured by default).
const tenantsExample = `
# Per-tenant settings, by tenant name (a tenant's tasks are those its tokens submit:
# paddock token create --tenant NAME). weight: its share of the slots when tenants
# compete (default 1); max_running: its leased and running tasks at most, per server
# replica; max_queued: its queued tasks at most (a submit past it is refused);
# max_blob_bytes: the bytes of the blobs it uploaded that the blob store may hold (an
# upload past it is refused; bytes, or with a unit). 0: no limit. Tenants not listed
# have weight 1 and no limits. Only in the file.
# tenants:
#   acme:
#     weight: 3
#     max_running: 8
#     max_queued: 10000
#     max_blob_bytes: 50GiB
`

// tenantsConfig reads tenants.<name>.* strictly: an unknown field, a value that is not
// a number, or a bad limit is an error naming the key.
func tenantsConfig(v *viper.Viper) (tenant.Config, error) {
	raw := v.GetStringMap("tenants")
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	out := tenant.Config{}
	for _, n := range names {
		fields, ok := raw[n].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("tenants.%s: want a map of %s, e.g. tenants: {%s: {weight: 2, max_running: 8}}", n, strings.Join(tenant.Keys, ", "), n)
		}
		var l tenant.Limits
		for f, val := range fields {
			key := "tenants." + n + "." + f
			if f == "max_blob_bytes" {
				b, err := parseSize(strings.TrimSpace(fmt.Sprint(val)))
				if err != nil {
					return nil, fmt.Errorf("%s: %q: want bytes, or a number with a unit such as 10GiB (0: no limit)", key, fmt.Sprint(val))
				}
				l.MaxBlobBytes = b
				continue
			}
			x, err := number(val)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", key, err)
			}
			switch f {
			case "weight":
				l.Weight = x
			case "max_running", "max_queued":
				if x != float64(int(x)) {
					return nil, fmt.Errorf("%s: %v is not a whole number", key, val)
				}
				if f == "max_running" {
					l.MaxRunning = int(x)
				} else {
					l.MaxQueued = int(x)
				}
			default:
				return nil, fmt.Errorf("%s: unknown tenant setting %q: use %s", key, f, strings.Join(tenant.Keys, ", "))
			}
		}
		out[n] = l
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

// prices reads server.prices.*: an empty key is a missing price; anything else must be
// a number of 0 or more.
func prices(v *viper.Viper) (tenant.Prices, error) {
	var p tenant.Prices
	for _, x := range []struct {
		key string
		dst **float64
	}{{"cpu_second", &p.CPUSecond}, {"gib_second", &p.GiBSecond}, {"gib_moved", &p.GiBMoved}} {
		s := strings.TrimSpace(v.GetString("server.prices." + x.key))
		if s == "" {
			continue
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return p, fmt.Errorf("server.prices.%s: %q is not a number: give a price such as 0.00002", x.key, s)
		}
		*x.dst = &f
	}
	return p, p.Validate()
}

// number is a config value (YAML number, or a string from the environment) as a float.
func number(v any) (float64, error) {
	switch x := v.(type) {
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case float64:
		return x, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err == nil {
			return f, nil
		}
	}
	return 0, fmt.Errorf("%v is not a number", v)
}
