// Command testserver runs the scheduler on a SQLite file for the integration tests
// that kill the server (kill -9) and restart it; not for users (`paddock server` is).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

func main() {
	db := flag.String("db", "", "SQLite file")
	agentAddr := flag.String("agent-listen", "127.0.0.1:0", "agent port")
	clientAddr := flag.String("client-listen", "127.0.0.1:0", "client port")
	hb := flag.Duration("heartbeat", 100*time.Millisecond, "heartbeat interval")
	ttl := flag.Duration("lease-ttl", time.Second, "lease TTL")
	blobDir := flag.String("blob-dir", "", "directory of a filesystem blob store (empty: no blob store)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *db, *agentAddr, *clientAddr, *blobDir, *hb, *ttl); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, db, agentAddr, clientAddr, blobDir string, hb, ttl time.Duration) error {
	st, err := sqlite.Open(ctx, db, sqlite.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	cfg := sched.Config{Dev: true, HeartbeatInterval: hb, LeaseTTL: ttl, RetryBase: 20 * time.Millisecond,
		RetryMax: 200 * time.Millisecond, TimeoutGrace: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if blobDir != "" {
		fs, err := blob.OpenFS(blobDir)
		if err != nil {
			return err
		}
		cfg.Blobs = fs
	}
	srv, err := sched.New(cfg, st)
	if err != nil {
		return err
	}
	al, err := net.Listen("tcp", agentAddr)
	if err != nil {
		return err
	}
	cl, err := net.Listen("tcp", clientAddr)
	if err != nil {
		return err
	}
	fmt.Printf("TESTSERVER READY agent=%s client=%s\n", al.Addr(), cl.Addr())
	return srv.Run(ctx, al, cl)
}
