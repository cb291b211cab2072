package tenant

import (
	"errors"
	"fmt"
	"sort"
)

// Limits are one tenant's settings (config tenants.<name>.*).
type Limits struct {
	// Weight is the tenant's share of the slots when tenants compete (default 1).
	Weight float64
	// MaxRunning bounds the tenant's leased and running tasks on this server replica
	// (0: no limit). Dispatch leaves its further tasks queued.
	MaxRunning int
	// MaxQueued bounds the tenant's queued tasks (0: no limit). A submit past it is
	// refused.
	MaxQueued int
	// MaxBlobBytes bounds the bytes of the blobs the tenant uploaded that the blob
	// store holds (0: no limit). An upload past it is refused, nothing stored.
	MaxBlobBytes int64
}

// Config is the per-tenant configuration, by tenant name. Tenants not in it have
// weight 1 and no limits.
type Config map[string]Limits

// Keys are the keys a tenant's configuration may have.
var Keys = []string{"weight", "max_running", "max_queued", "max_blob_bytes"}

// Validate reports the first bad setting, naming its key and the fix.
func (c Config) Validate() error {
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l := c[n]
		switch {
		case !ValidName(n):
			return fmt.Errorf("tenants.%s: %q is not a tenant name: use %s", n, n, NameRule)
		case l.Weight < 0:
			return fmt.Errorf("tenants.%s.weight: %v is negative: give a positive share (default 1)", n, l.Weight)
		case l.MaxRunning < 0:
			return fmt.Errorf("tenants.%s.max_running: %d is negative: give 0 for no limit or a positive number", n, l.MaxRunning)
		case l.MaxQueued < 0:
			return fmt.Errorf("tenants.%s.max_queued: %d is negative: give 0 for no limit or a positive number", n, l.MaxQueued)
		case l.MaxBlobBytes < 0:
			return fmt.Errorf("tenants.%s.max_blob_bytes: %d is negative: give 0 for no limit or a size such as 10GiB", n, l.MaxBlobBytes)
		}
	}
	return nil
}

// Of returns the limits of tenant (the defaults when it is not configured).
func (c Config) Of(tenant string) Limits {
	l := c[tenant]
	if l.Weight <= 0 {
		l.Weight = 1
	}
	return l
}

// Prices are what accounting charges (config server.prices.*). A nil price is not
// set.
type Prices struct {
	CPUSecond *float64 // per CPU-second of handler time
	GiBSecond *float64 // per GiB-second of guest memory (memory × wall time)
	GiBMoved  *float64 // per GiB of blob bytes moved in or out
}

// Validate refuses negative prices, naming the key.
func (p Prices) Validate() error {
	for _, x := range []struct {
		key string
		v   *float64
	}{{"cpu_second", p.CPUSecond}, {"gib_second", p.GiBSecond}, {"gib_moved", p.GiBMoved}} {
		if x.v != nil && *x.v < 0 {
			return fmt.Errorf("server.prices.%s: %v is negative: give a price of 0 or more", x.key, *x.v)
		}
	}
	return nil
}

// Missing names the prices not set, as config keys.
func (p Prices) Missing() []string {
	var out []string
	if p.CPUSecond == nil {
		out = append(out, "server.prices.cpu_second")
	}
	if p.GiBSecond == nil {
		out = append(out, "server.prices.gib_second")
	}
	if p.GiBMoved == nil {
		out = append(out, "server.prices.gib_moved")
	}
	return out
}

// ErrNoPrices is returned by Cost when a price is missing.
var ErrNoPrices = errors.New("no cost: prices missing")

// Cost is the price of cpuSeconds, gibSeconds and bytesMoved, or ErrNoPrices when
// any price is not set (a partial cost would mislead).
func (p Prices) Cost(cpuSeconds, gibSeconds float64, bytesMoved int64) (float64, error) {
	if len(p.Missing()) > 0 {
		return 0, ErrNoPrices
	}
	return cpuSeconds**p.CPUSecond + gibSeconds**p.GiBSecond + float64(bytesMoved)/(1<<30)**p.GiBMoved, nil
}
