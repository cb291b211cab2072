package bwshare

import (
	"math"
	"strings"
	"testing"
)

const mb = 1e6

func TestAllocate(t *testing.T) {
	tests := []struct {
		name       string
		capacity   float64
		in         []Demand
		want       map[string]float64
		wantScaled bool
	}{
		{"one class takes all", 90 * mb, []Demand{{"a", Class{10 * mb, 1}}}, map[string]float64{"a": 90 * mb}, false},
		{"minimums then equal weights", 90 * mb,
			[]Demand{{"a", Class{10 * mb, 1}}, {"b", Class{20 * mb, 1}}, {"c", Class{30 * mb, 1}}},
			map[string]float64{"a": 20 * mb, "b": 30 * mb, "c": 40 * mb}, false},
		{"one ends: the others share its part", 90 * mb,
			[]Demand{{"a", Class{10 * mb, 1}}, {"b", Class{20 * mb, 1}}},
			map[string]float64{"a": 40 * mb, "b": 50 * mb}, false},
		{"weights share the rest", 100 * mb,
			[]Demand{{"online", Class{0, 3}}, {"batch", Class{20 * mb, 1}}},
			map[string]float64{"online": 60 * mb, "batch": 40 * mb}, false},
		{"minimums exactly the capacity", 60 * mb,
			[]Demand{{"a", Class{10 * mb, 1}}, {"b", Class{20 * mb, 1}}, {"c", Class{30 * mb, 1}}},
			map[string]float64{"a": 10 * mb, "b": 20 * mb, "c": 30 * mb}, false},
		{"minimums exceed the capacity: scaled", 30 * mb,
			[]Demand{{"a", Class{10 * mb, 1}}, {"b", Class{20 * mb, 1}}, {"c", Class{30 * mb, 1}}},
			map[string]float64{"a": 5 * mb, "b": 10 * mb, "c": 15 * mb}, true},
		{"scaled: a class without minimum gets the floor", 30 * mb,
			[]Demand{{"a", Class{40 * mb, 1}}, {"default", Class{0, 1}}},
			map[string]float64{"a": 30 * mb, "default": Floor}, true},
		{"tiny capacity: the floor", 1000,
			[]Demand{{"a", Class{0, 1}}},
			map[string]float64{"a": Floor}, false},
		{"not shaped", 0,
			[]Demand{{"a", Class{10 * mb, 1}}},
			map[string]float64{"a": math.Inf(1)}, false},
		{"nothing active", 90 * mb, nil, map[string]float64{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Allocate(tt.capacity, tt.in)
			if got.Scaled != tt.wantScaled {
				t.Errorf("Scaled = %v, want %v", got.Scaled, tt.wantScaled)
			}
			if len(got.Rates) != len(tt.want) {
				t.Fatalf("rates %v, want %v", got.Rates, tt.want)
			}
			var sum float64
			for n, w := range tt.want {
				g, ok := got.Rates[n]
				if !ok || !(math.Abs(g-w) < 1 || g == w) {
					t.Errorf("class %s: rate %.0f, want %.0f", n, g, w)
				}
				sum += g
			}
			if tt.capacity > 0 && len(tt.in) > 0 && !tt.wantScaled && sum < tt.capacity-1 {
				t.Errorf("allocated %.0f of %.0f: capacity left unused", sum, tt.capacity)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr string
	}{
		{"90MB/s", 90e6, ""},
		{"1GiB/s", 1 << 30, ""},
		{" 750 KB/s ", 750e3, ""},
		{"90MB", 0, "want a rate in bytes per second with a unit and /s"},
		{"fast/s", 0, "want a rate in bytes per second"},
		{"0MB/s", 0, "want a rate above 0"},
		{"-5MB/s", 0, "want a rate in bytes per second"},
		{"", 0, "want a rate in bytes per second"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate("host.bandwidth", tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "host.bandwidth") {
					t.Fatalf("ParseRate(%q) = %v, %v; want an error naming host.bandwidth and %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseRate(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"ok", Config{Capacity: 90 * mb, Classes: map[string]Class{"online": {10 * mb, 2}}}, nil},
		{"not shaped", Config{}, nil},
		{"negative capacity", Config{Capacity: -1}, []string{"host.bandwidth is -1"}},
		{"NaN capacity", Config{Capacity: math.NaN()}, []string{"host.bandwidth is NaN"}},
		{"bad class", Config{Capacity: 90 * mb, Classes: map[string]Class{"a.b": {-1, 0}}},
			[]string{`class name "a.b"`, "host.bandwidth_classes.a.b.min is -1", "host.bandwidth_classes.a.b.weight is 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad configuration")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
