package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/hostd"
	"github.com/paddockvm/paddock/internal/buildinfo"
	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

func init() {
	host, _ := os.Hostname()
	config.Register(
		config.Key{Name: "host.id", Default: host, Usage: "this host's id (its mTLS certificate's Common Name; default: the host name)", Flag: "host-id", Cmds: []string{"host"}},
		config.Key{Name: "host.server", Default: "127.0.0.1:7072", Usage: "the server's cluster port (server.cluster_listen), host:port; several server replicas as a YAML list or separated by commas (the host uses one and moves to another when it dies)", Flag: "cluster-server", Cmds: []string{"host"}},
		config.Key{Name: "host.dev", Default: false, Usage: "dev mode: issue this host's certificate from the dev CA that paddock server --dev wrote to <data_dir>/pki (same machine)", Flag: "dev", Cmds: []string{"host"}},
		config.Key{Name: "host.tls_cert", Default: "", Usage: "this host's client certificate (PEM; Common Name = host.id), outside dev mode"},
		config.Key{Name: "host.tls_key", Default: "", Usage: "the private key of host.tls_cert (PEM)"},
		config.Key{Name: "host.tls_ca", Default: "", Usage: "the CA certificate (PEM) that signed the server's cluster certificate"},
		config.Key{Name: "host.run_dir", Default: "/run/paddock/vms", Usage: "one directory per guest (socket, console log, scratch disk); QEMU must reach it"},
		config.Key{Name: "host.pools", Default: []any{}, Usage: "pools: a list of {name, image, vcpus, memory, min_idle, max, idle_timeout, max_tasks_per_vm, task_types, scratch_mib, boot_timeout, cmdline}"},
		config.Key{Name: "host.thresholds.cpu_percent", Default: 0.0, Usage: "no scale-up while host CPU is above this percent (0: no limit)"},
		config.Key{Name: "host.thresholds.min_mem_available_mib", Default: 0, Usage: "no scale-up while less memory than this is available (0: no limit)"},
		config.Key{Name: "host.thresholds.nic_bytes_per_sec", Default: 0.0, Usage: "no scale-up while NIC throughput (rx+tx) is above this (0: no limit)"},
		config.Key{Name: "host.load_interval", Default: 2 * time.Second, Usage: "host load sampling interval", Positive: true},
		config.Key{Name: "host.tick", Default: time.Second, Usage: "pool reconcile interval", Positive: true},
		config.Key{Name: "host.guest_session_timeout", Default: vmpool.DefaultGuestSessionTimeout, Usage: "a ready guest whose agent has no session through the relay for this long (none since its ready line, or none since the last one closed) is destroyed, reported gone and replaced (at least 10s)"},
		config.Key{Name: "host.max_concurrent_starts", Default: vmpool.DefaultMaxConcurrentStarts, Positive: true,
			Usage: "guests this host starts at once over all its pools (create or restore → ready line; a snapshot template's boot counts too); guests wanted beyond it wait, shown as booting, and start in turn. Raise it on hosts with hardware virtualization and many cores; too many at once can break the libvirt connection (\"Cannot write data: Broken pipe\")"},
		config.Key{Name: "host.metrics_listen", Default: "127.0.0.1:7073", Usage: "address of the host daemon's /metrics (empty: none)", Flag: "metrics-listen", Cmds: []string{"host"}},
	)
	config.Register(hostCacheKeys...)
	addCommand(30, newHostCmd)
}

// decodePools reads host.pools strictly: an unknown field in a pool is an error naming it.
func decodePools(v *viper.Viper) ([]vmpool.PoolConfig, error) {
	var pools []vmpool.PoolConfig
	err := v.UnmarshalKey("host.pools", &pools, func(c *mapstructure.DecoderConfig) {
		c.ErrorUnused = true
		c.DecodeHook = mapstructure.ComposeDecodeHookFunc(mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(","))
	})
	if err != nil {
		return nil, fmt.Errorf("host.pools: %w (fields: name, image, vcpus, memory, min_idle, max, idle_timeout, max_tasks_per_vm, task_types, scratch_mib, boot_timeout, cmdline)", err)
	}
	return pools, nil
}

func hostTLS(app *App) (*tls.Config, error) {
	v := app.Cfg.V
	if v.GetBool("host.dev") {
		return pki.DevHostTLS(filepath.Join(v.GetString("data_dir"), "pki"), v.GetString("host.id"))
	}
	return pki.HostTLS(v.GetString("host.tls_cert"), v.GetString("host.tls_key"), v.GetString("host.tls_ca"))
}

func newHostCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "host",
		Short: "Run the host daemon (pools of guests, relay to the server), or list hosts",
		Long: `Run the host daemon: it connects to local libvirt (hypervisor.uri) and to the server's
cluster port (host.server) over mutual TLS, registers this host (host.id), runs the pools of
host.pools, reports load and guests, and relays every guest's agent session to the server.
In dev mode (--dev) it issues its own certificate from the dev CA in <data_dir>/pki that
` + "`paddock server --dev`" + ` wrote; otherwise set host.tls_cert, host.tls_key and host.tls_ca.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := app.Cfg.V
			pools, err := decodePools(v)
			if err != nil {
				return err
			}
			pcfg := vmpool.Config{HostID: v.GetString("host.id"), RunDir: v.GetString("host.run_dir"), Pools: pools, Tick: v.GetDuration("host.tick"),
				GuestSessionTimeout: v.GetDuration("host.guest_session_timeout"), MaxConcurrentStarts: v.GetInt("host.max_concurrent_starts"),
				Thresholds: hostload.Thresholds{CPUPercent: v.GetFloat64("host.thresholds.cpu_percent"),
					MinMemAvailableMiB: uint64(max(v.GetInt64("host.thresholds.min_mem_available_mib"), 0)), NICBytesPerSec: v.GetFloat64("host.thresholds.nic_bytes_per_sec")}}
			if err := pcfg.ValidateHost(); err != nil {
				return err
			}
			for _, p := range pools { // bad pools are reported; the daemon runs the others
				if err := p.Validate(); err != nil {
					app.Log.Error("bad pool in host.pools; the other pools will run", "err", err)
				}
			}
			cc, err := hostCacheConfig(v, v.GetString("data_dir"), pcfg.RunDir, app.Log)
			if err != nil {
				return err
			}
			bw, err := hostBandwidthConfig(v)
			if err != nil {
				return err
			}
			if err := hostd.CheckPeers(v.GetBool("host.peer_fetch"), config.List(v, "host.peers")); err != nil {
				return err
			}
			tlsCfg, err := hostTLS(app)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			hv, err := connectHypervisor(ctx, app)
			if err != nil {
				return err
			}
			defer hv.Close()
			// A second signal: destroy the guests at once rather than leave them running.
			defer onForceStop(destroyHostGuests(hv, pcfg.HostID, app.Log))()
			store, err := imageStore(app)
			if err != nil {
				return err
			}
			d, err := hostd.New(hostd.Config{Server: strings.Join(config.List(v, "host.server"), ","), TLS: tlsCfg, Pools: pcfg, LoadInterval: v.GetDuration("host.load_interval"),
				MetricsListen: v.GetString("host.metrics_listen"), Accel: string(hv.Accel().Accel), Version: buildinfo.String(), Logger: app.Log, Cache: cc,
				Bandwidth: bw, PeerFetch: v.GetBool("host.peer_fetch"), Peers: config.List(v, "host.peers"), PeerListen: v.GetString("host.peer_listen"),
				Ready: func() { sdReady(ctx, app.Log) }}, hv, store) // systemd READY=1 (sdnotify.go)
			if err != nil {
				return err
			}
			return ignoreCanceled(d.Run(ctx))
		},
	}
	var lsJSON bool
	hostLs := &cobra.Command{
		Use:   "ls",
		Short: "List the host daemons the server knows, with their load and pools",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			hosts, err := listEach(ctx, app, func(ctx context.Context, cc paddockv1connect.ClusterServiceClient) ([]*paddockv1.Host, error) {
				r, err := cc.ListHosts(ctx, connect.NewRequest(&paddockv1.ListHostsRequest{}))
				if err != nil {
					return nil, err
				}
				return r.Msg.GetHosts(), nil
			})
			if err != nil {
				return fmt.Errorf("listing hosts: %w", err)
			}
			hosts = connectedFirst(hosts, (*paddockv1.Host).GetId, func(h *paddockv1.Host) bool { return h.GetState() == "connected" })
			if lsJSON {
				return printProto(app, &paddockv1.ListHostsResponse{Hosts: hosts})
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tREPLICA\tSTATE\tACCEL\tCPUS\tCPU%\tMEM AVAIL\tLINK\tGUESTS\tPOOLS\tLAST SEEN")
			for _, h := range hosts {
				var ps []string
				for _, p := range h.GetPools() {
					s := p.GetName() + ":" + p.GetState()
					if len(p.GetBlocked()) > 0 {
						s += "(blocked:" + strings.Join(p.GetBlocked(), ",") + ")"
					}
					ps = append(ps, s)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%.1f\t%s\t%s\t%d\t%s\t%s\n", h.GetId(), orDash(h.GetReplica() != "", h.GetReplica()), h.GetState(), h.GetAccel(), h.GetCpus(), h.GetCpuPercent(),
					mib(h.GetMemAvailableBytes()), linkUse(h.GetTransferBytesPerSec(), h.GetTransferCapacityBytesPerSec()), h.GetGuests(), strings.Join(ps, " "), ago(h.GetLastSeenUnixMs()))
			}
			return tw.Flush()
		},
	}
	hostLs.Flags().BoolVar(&lsJSON, "json", false, "print the ListHostsResponse as JSON")
	cmd.AddCommand(hostLs)
	return cmd
}

func mib(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }

// linkUse shows a host's blob transfers against its host.bandwidth: "12.5/90 MB/s
// (14%)", or "12.5 MB/s" when they are not shaped.
func linkUse(rate, capacity float64) string {
	if capacity <= 0 {
		return fmt.Sprintf("%.1f MB/s", rate/1e6)
	}
	return fmt.Sprintf("%.1f/%.0f MB/s (%.0f%%)", rate/1e6, capacity/1e6, 100*rate/capacity)
}

func ago(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.Since(time.UnixMilli(ms)).Round(time.Second).String() + " ago"
}
