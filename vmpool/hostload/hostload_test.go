package hostload

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// script is a Source returning a fixed sequence of readings.
type script struct {
	mu  sync.Mutex
	seq []Counters
	err error
}

func (s *script) Read(ctx context.Context) (Counters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return Counters{}, s.err
	}
	c := s.seq[0]
	if len(s.seq) > 1 {
		s.seq = s.seq[1:]
	}
	return c, nil
}

func TestComputeRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name       string
		prev, cur  Counters
		dt         time.Duration
		wantCPU    float64
		wantRx     float64
		wantTx     float64
		wantMemAvl uint64
	}{
		{"half busy", Counters{CPUBusy: 10, CPUTotal: 100, NICRx: 1000, NICTx: 0}, Counters{CPUBusy: 15, CPUTotal: 110, NICRx: 3000, NICTx: 500, MemAvailable: 7}, 2 * time.Second, 50, 1000, 250, 7},
		{"idle", Counters{CPUBusy: 10, CPUTotal: 100}, Counters{CPUBusy: 10, CPUTotal: 120}, time.Second, 0, 0, 0, 0},
		{"counter went backwards is no traffic", Counters{NICRx: 5000, NICTx: 5000, CPUTotal: 1}, Counters{NICRx: 10, NICTx: 6000, CPUTotal: 1}, time.Second, 0, 0, 1000, 0},
		{"no CPU time elapsed", Counters{CPUBusy: 5, CPUTotal: 10}, Counters{CPUBusy: 5, CPUTotal: 10}, time.Second, 0, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Compute(tt.prev, tt.cur, t0, t0.Add(tt.dt))
			if s.CPUPercent != tt.wantCPU || s.NICRxBytesPerSec != tt.wantRx || s.NICTxBytesPerSec != tt.wantTx || s.MemAvailableBytes != tt.wantMemAvl || s.Interval != tt.dt {
				t.Fatalf("Compute = %+v, want cpu %v rx %v tx %v memavail %v interval %v", s, tt.wantCPU, tt.wantRx, tt.wantTx, tt.wantMemAvl, tt.dt)
			}
		})
	}
}

func TestThresholds(t *testing.T) {
	s := Sample{CPUPercent: 90, MemAvailableBytes: 100 << 20, NICRxBytesPerSec: 600, NICTxBytesPerSec: 600}
	tests := []struct {
		name string
		th   Thresholds
		want []string
	}{
		{"none set", Thresholds{}, nil},
		{"all under", Thresholds{CPUPercent: 95, MinMemAvailableMiB: 50, NICBytesPerSec: 2000}, nil},
		{"cpu", Thresholds{CPUPercent: 80}, []string{ResourceCPU}},
		{"memory", Thresholds{MinMemAvailableMiB: 101}, []string{ResourceMemory}},
		{"nic counts rx plus tx", Thresholds{NICBytesPerSec: 1000}, []string{ResourceNIC}},
		{"all", Thresholds{CPUPercent: 1, MinMemAvailableMiB: 1 << 20, NICBytesPerSec: 1}, []string{ResourceCPU, ResourceMemory, ResourceNIC}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, b := range tt.th.Exceeded(s) {
				got = append(got, b.Resource)
				if !strings.Contains(b.Detail, "thresholds.") {
					t.Errorf("detail %q does not name the configuration key", b.Detail)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("Exceeded = %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range []Thresholds{{CPUPercent: -1}, {CPUPercent: 101}, {NICBytesPerSec: -5}} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "thresholds.") {
			t.Errorf("Validate(%+v) = %v, want an error naming the key", bad, err)
		}
	}
}

func TestMonitorSamplesAndMetrics(t *testing.T) {
	src := &script{seq: []Counters{
		{CPUBusy: 0, CPUTotal: 0, MemTotal: 8 << 30, MemAvailable: 4 << 30},
		{CPUBusy: 3, CPUTotal: 4, MemTotal: 8 << 30, MemAvailable: 2 << 30, NICRx: 4096, NICTx: 1024},
	}}
	now := time.Unix(0, 0)
	m, err := New(time.Millisecond, WithSource(src), WithNow(func() time.Time { now = now.Add(2 * time.Second); return now }))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Latest(); ok {
		t.Fatal("Latest before any reading says ok")
	}
	if _, ok, err := m.Sample(context.Background()); ok || err != nil {
		t.Fatalf("first Sample = ok %v err %v, want a priming read", ok, err)
	}
	s, ok, err := m.Sample(context.Background())
	if !ok || err != nil || s.CPUPercent != 75 || s.NICRxBytesPerSec != 2048 || s.NICTxBytesPerSec != 512 || s.MemAvailableBytes != 2<<30 {
		t.Fatalf("second Sample = %+v ok %v err %v", s, ok, err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP paddock_host_cpu_percent Host CPU busy percent (all CPUs) over the last sampling interval.
# TYPE paddock_host_cpu_percent gauge
paddock_host_cpu_percent 75
# HELP paddock_host_nic_receive_bytes_per_second Bytes received per second over all non-loopback NICs over the last interval.
# TYPE paddock_host_nic_receive_bytes_per_second gauge
paddock_host_nic_receive_bytes_per_second 2048
`), "paddock_host_cpu_percent", "paddock_host_nic_receive_bytes_per_second"); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.err = errors.New("boom")
	src.mu.Unlock()
	if _, _, err := m.Sample(context.Background()); err == nil {
		t.Fatal("a failing source gave no error")
	}
	if got, ok := m.Latest(); !ok || got != s {
		t.Fatalf("a failed reading replaced the latest sample: %+v", got)
	}
	if n := testutil.ToFloat64(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		ch <- prometheus.MustNewConstMetric(m.descErrs, prometheus.CounterValue, float64(m.errs))
	})); n != 1 {
		t.Fatalf("error counter = %v, want 1", n)
	}
}

// TestSystemSource reads this host's real counters through gopsutil twice, with CPU
// work in between, and checks the figures are plausible.
func TestSystemSource(t *testing.T) {
	m, err := New(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := m.Sample(ctx); err != nil {
		t.Fatalf("reading the host: %v", err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	s, ok, err := m.Sample(ctx)
	if err != nil || !ok {
		t.Fatalf("second reading: ok %v err %v", ok, err)
	}
	if s.CPUPercent <= 0 || s.CPUPercent > 100 {
		t.Errorf("CPU percent %v after 300 ms of busy work, want in (0, 100]", s.CPUPercent)
	}
	if s.MemTotalBytes == 0 || s.MemAvailableBytes == 0 || s.MemAvailableBytes > s.MemTotalBytes {
		t.Errorf("memory available %d of %d", s.MemAvailableBytes, s.MemTotalBytes)
	}
	if s.NICRxBytesPerSec < 0 || s.NICTxBytesPerSec < 0 {
		t.Errorf("negative NIC rates %+v", s)
	}
	t.Logf("host load: %+v", s)
}

func TestMonitorRunStops(t *testing.T) {
	m, _ := New(5*time.Millisecond, WithSource(&script{seq: []Counters{{CPUTotal: 1}, {CPUTotal: 2, CPUBusy: 1}}}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	for i := 0; ; i++ {
		if _, ok := m.Latest(); ok {
			break
		}
		if i > 1000 {
			t.Fatal("Run took no sample")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
