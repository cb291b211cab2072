package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/spf13/viper"
)

// retentionStates are the final states with a server.task_retention.<state> key.
var retentionStates = []store.State{store.Succeeded, store.Failed, store.Cancelled, store.Dead}

func init() {
	for _, st := range retentionStates {
		config.Register(config.Key{Name: "server.task_retention." + string(st), Default: hours(sched.DefaultTaskRetention[st]),
			Usage: fmt.Sprintf("how long %s tasks (and their attempts) are kept after they finished; 0 keeps them forever", st)})
	}
}

// taskRetention reads the server.task_retention.* keys strictly: a value that is not a
// duration is an error naming the key, never a silent default.
func taskRetention(v *viper.Viper) (map[store.State]time.Duration, error) {
	out := map[store.State]time.Duration{}
	for _, st := range retentionStates {
		key := "server.task_retention." + string(st)
		raw := strings.TrimSpace(v.GetString(key))
		d, err := time.ParseDuration(raw)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("%s %q: give a duration such as 24h or 168h (0 keeps %s tasks forever)", key, raw, st)
		}
		out[st] = d
	}
	return out, nil
}

// hours formats a whole number of hours as "24h" (time.Duration's String gives "24h0m0s").
func hours(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}
