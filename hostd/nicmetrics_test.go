package hostd_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/paddockvm/paddock/hostd"
	"github.com/paddockvm/paddock/hypervisor/hypervisortest"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/internal/testutil"
	"github.com/paddockvm/paddock/vmpool"
)

// scrapeNIC GETs url (a /metrics) and returns the receive and transmit byte counters
// of nic.
func scrapeNIC(t *testing.T, url, nic string) (rx, tx float64) {
	t.Helper()
	res, err := (&http.Client{Timeout: time.Minute}).Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	read := func(dir string) float64 {
		re := regexp.MustCompile(`(?m)^paddock_host_nic_` + dir + `_bytes_total\{nic="` + regexp.QuoteMeta(nic) + `"\} (\S+)$`)
		m := re.FindSubmatch(b)
		if m == nil {
			t.Fatalf("no paddock_host_nic_%s_bytes_total{nic=%q} in /metrics:\n%s", dir, nic, b)
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatalf("paddock_host_nic_%s_bytes_total: %v", dir, err)
		}
		return v
	}
	if !regexp.MustCompile(`(?m)^# TYPE paddock_host_nic_receive_bytes_total counter$`).Match(b) {
		t.Fatalf("paddock_host_nic_receive_bytes_total is not typed counter:\n%s", b)
	}
	return read("receive"), read("transmit")
}

// sendOverLoopback moves n bytes through a TCP connection on 127.0.0.1.
func sendOverLoopback(t *testing.T, n int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		m, _ := io.Copy(io.Discard, c)
		got <- m
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(c, zeros{}, n); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if m := <-got; m != n {
		t.Fatalf("sent %d bytes over loopback, %d arrived", n, m)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestNICCountersOnMetrics runs a host daemon (fake hypervisor, no server to reach)
// with its metrics port, scrapes /metrics, moves 8 MiB over loopback and scrapes
// again: the lo counters (the kernel's own, read at each scrape) rose by at least that.
func TestNICCountersOnMetrics(t *testing.T) {
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	if _, err := pki.DevServerTLS(pkiDir); err != nil { // writes the dev CA
		t.Fatal(err)
	}
	tlsCfg, err := pki.DevHostTLS(pkiDir, "nic-test")
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := images.Open(filepath.Join(dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := testutil.FreeAddr(t)
	ready := make(chan struct{})
	d, err := hostd.New(hostd.Config{Server: "127.0.0.1:1", TLS: tlsCfg, Accel: "tcg", MetricsListen: metricsAddr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func() { close(ready) },
		Pools: vmpool.Config{HostID: "nic-test", RunDir: filepath.Join(dir, "run")}}, hypervisortest.New("paddock-"), imgs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("host daemon stopped: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("host daemon not ready after 2 minutes")
	}

	url := "http://" + metricsAddr + "/metrics"
	rx0, tx0 := scrapeNIC(t, url, "lo")
	const n = 8 << 20
	sendOverLoopback(t, n)
	rx1, tx1 := scrapeNIC(t, url, "lo")
	if rx1-rx0 < n || tx1-tx0 < n {
		t.Fatalf("after %d bytes over loopback: lo receive %v → %v, transmit %v → %v; want both up by at least %d", n, rx0, rx1, tx0, tx1, n)
	}
}
