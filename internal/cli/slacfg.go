package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/sched"
)

func init() {
	config.Register(config.Key{Name: "server.online_sla", Default: "*=" + sched.DefaultOnlineSLA.String(),
		Usage: "target submit-to-start latency of online tasks, by type: TYPE=DURATION pairs separated by commas, \"*\" for every other type (e.g. \"thumb=200ms,*=1s\"); /metrics counts the starts that met and missed it"})
}

// onlineSLA reads server.online_sla ("type=duration,…") strictly: a malformed pair is an
// error naming the key and the pair.
func onlineSLA(v *viper.Viper) (map[string]time.Duration, error) {
	raw := strings.TrimSpace(v.GetString("server.online_sla"))
	out := map[string]time.Duration{}
	if raw == "" {
		return out, nil
	}
	for _, pair := range strings.Split(raw, ",") {
		typ, ds, ok := strings.Cut(strings.TrimSpace(pair), "=")
		d, err := time.ParseDuration(strings.TrimSpace(ds))
		if !ok || strings.TrimSpace(typ) == "" || err != nil || d <= 0 {
			return nil, fmt.Errorf("server.online_sla: %q: give TYPE=DURATION pairs separated by commas, e.g. \"thumb=200ms,*=1s\"", pair)
		}
		out[strings.TrimSpace(typ)] = d
	}
	return out, nil
}
