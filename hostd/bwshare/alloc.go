package bwshare

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/dustin/go-humanize"
)

// DefaultClass is the class of transfers whose class is not configured.
const DefaultClass = "default"

// Floor is the least rate (bytes/s) an active class gets, also when the minimums of
// the others take the whole capacity: a class is slowed, never stopped.
const Floor = 64 << 10

// Class is one class's share.
type Class struct {
	// Min (host.bandwidth_classes.<name>.min) is the class's guaranteed rate in
	// bytes/s while it has a transfer (0: none).
	Min float64
	// Weight (host.bandwidth_classes.<name>.weight) is the class's part of what is
	// left over the minimums, relative to the other active classes' weights (> 0).
	Weight float64
}

// Config configures a Shaper.
type Config struct {
	// Capacity (host.bandwidth) is the link's capacity in bytes/s that all transfers
	// share; 0 does not shape (transfers are counted only).
	Capacity float64
	// Classes are the configured classes by name. DefaultClass, when not among them,
	// is {Min: 0, Weight: 1}.
	Classes map[string]Class
}

// Validate checks cfg; each error names the configuration key and the fix.
func (cfg Config) Validate() error {
	var errs []error
	if !(cfg.Capacity >= 0) || math.IsInf(cfg.Capacity, 0) {
		errs = append(errs, fmt.Errorf("host.bandwidth is %v bytes/s: give a positive rate such as 90MB/s, or leave it empty not to shape transfers", cfg.Capacity))
	}
	names := make([]string, 0, len(cfg.Classes))
	for n := range cfg.Classes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := cfg.Classes[n]
		if n == "" || strings.ContainsAny(n, ". \t") {
			errs = append(errs, fmt.Errorf("host.bandwidth_classes: class name %q: use a tenant name, online, batch or default (no dots or spaces)", n))
		}
		if !(c.Min >= 0) || math.IsInf(c.Min, 0) {
			errs = append(errs, fmt.Errorf("host.bandwidth_classes.%s.min is %v bytes/s: give 0 or a rate such as 10MB/s", n, c.Min))
		}
		if !(c.Weight > 0) || math.IsInf(c.Weight, 0) {
			errs = append(errs, fmt.Errorf("host.bandwidth_classes.%s.weight is %v: give a number above 0, such as 1", n, c.Weight))
		}
	}
	return errors.Join(errs...)
}

// ParseRate parses a rate such as "90MB/s", "1.5GiB/s" or "750KB/s" into bytes/s
// (decimal units are powers of 1000, binary ones of 1024). key names the setting in
// the error, which says the form wanted. The rate must be above 0.
func ParseRate(key, s string) (float64, error) {
	t := strings.TrimSpace(s)
	num, ok := strings.CutSuffix(t, "/s")
	if !ok {
		return 0, fmt.Errorf("%s %q: want a rate in bytes per second with a unit and /s, such as 90MB/s or 1GiB/s", key, s)
	}
	n, err := humanize.ParseBytes(strings.TrimSpace(num))
	if err != nil {
		return 0, fmt.Errorf("%s %q: want a rate in bytes per second with a unit and /s, such as 90MB/s or 1GiB/s", key, s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%s %q: want a rate above 0, such as 90MB/s", key, s)
	}
	return float64(n), nil
}

// Demand is one active class in an allocation.
type Demand struct {
	Name string
	Class
}

// Allocation is the rate of each active class.
type Allocation struct {
	// Rates are bytes/s by class name; +Inf when the capacity is 0 (not shaped).
	Rates map[string]float64
	// Scaled is true when the minimums exceeded the capacity and were scaled down.
	Scaled bool
	// MinSum is the sum of the active classes' minimums.
	MinSum float64
}

// Allocate divides capacity among the active classes: each gets its minimum and a part
// of what is left in proportion to its weight. When the minimums exceed the capacity,
// each gets its minimum scaled by capacity/sum of minimums (and nothing more). No class
// gets less than Floor. capacity 0 gives every class +Inf.
func Allocate(capacity float64, active []Demand) Allocation {
	a := Allocation{Rates: make(map[string]float64, len(active))}
	if capacity <= 0 {
		for _, d := range active {
			a.Rates[d.Name] = math.Inf(1)
		}
		return a
	}
	var wsum float64
	for _, d := range active {
		a.MinSum += d.Min
		wsum += d.Weight
	}
	rest := capacity - a.MinSum
	scale := 1.0
	if rest < 0 {
		a.Scaled, scale, rest = true, capacity/a.MinSum, 0
	}
	for _, d := range active {
		r := d.Min * scale
		if wsum > 0 {
			r += rest * d.Weight / wsum
		}
		a.Rates[d.Name] = max(r, Floor)
	}
	return a
}
