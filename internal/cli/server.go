package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/paddockvm/paddock/internal/buildinfo"
	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/postgres"
	"github.com/paddockvm/paddock/sched/store/sqlite"
)

// serverCmds get the server.* flags.
var serverCmds = []string{"server", "dev"}

func init() {
	config.Register(
		config.Key{Name: "server.listen", Default: "127.0.0.1:7070", Usage: "client API address of the server (gRPC and JSON over HTTP, /metrics)", Flag: "listen", Cmds: serverCmds},
		config.Key{Name: "server.agent_listen", Default: "127.0.0.1:7071", Usage: "TCP agent port of the server (empty: none; guests then reach the server only through host daemons); outside dev mode it needs server.agent_token", Flag: "agent-listen", Cmds: serverCmds},
		config.Key{Name: "server.dev", Default: false, Usage: "dev mode: clients need no bearer token", Flag: "dev", Cmds: serverCmds},
		config.Key{Name: "server.token", Default: "", Usage: "bearer token clients must send (required unless server.dev)"},
		config.Key{Name: "server.agent_token", Default: "", Usage: "bearer token TCP agents must send (required outside dev mode while server.agent_listen is set; guests behind a host need none)"},
		config.Key{Name: "server.heartbeat_interval", Default: time.Second, Usage: "how often agents heartbeat", Positive: true},
		config.Key{Name: "server.vouched_timeout", Default: time.Minute, Usage: "how long a guest's agent may stay silent (beyond 5 heartbeats) while its host daemon reports the guest running and using CPU, as a guest starved of CPU on a busy host does, before its session is closed and its tasks requeued; its leases are renewed meanwhile; 0: off"},
		config.Key{Name: "server.lease_ttl", Default: 10 * time.Second, Usage: "how long a lease lasts without a renewing heartbeat", Positive: true},
		config.Key{Name: "server.max_inline_bytes", Default: 4 << 20, Usage: "largest payload plus inputs (and outputs) stored inline, in bytes", Positive: true},
		config.Key{Name: "server.default_task_timeout", Default: 10 * time.Minute, Usage: "a task's timeout when it gives none", Positive: true},
		config.Key{Name: "server.default_max_attempts", Default: 3, Usage: "a task's max attempts when it gives none", Positive: true},
		config.Key{Name: "server.schedule_to_start_timeout", Default: time.Duration(0), Usage: "a task's schedule-to-start timeout when it gives none: a task no agent started this long after its submission fails (kind SCHEDULE_TIMEOUT); 0: off"},
		config.Key{Name: "server.retry_base", Default: time.Second, Usage: "first retry backoff (doubles per attempt, with jitter)", Positive: true},
		config.Key{Name: "server.retry_max", Default: 5 * time.Minute, Usage: "longest retry backoff", Positive: true},
		config.Key{Name: "server.cluster_listen", Default: "127.0.0.1:7072", Usage: "cluster port of the server: host daemons connect here over mutual TLS (empty: none)", Flag: "cluster-listen", Cmds: []string{"server"}},
		config.Key{Name: "server.cluster_tls_cert", Default: "", Usage: "the cluster port's server certificate (PEM), outside dev mode (dev mode: <data_dir>/pki, made on first start)"},
		config.Key{Name: "server.cluster_tls_key", Default: "", Usage: "the private key of server.cluster_tls_cert (PEM)"},
		config.Key{Name: "server.cluster_tls_ca", Default: "", Usage: "the CA certificate (PEM) host certificates must be signed by"},
		config.Key{Name: "server.store", Default: "sqlite", Usage: "task store: sqlite (in data_dir, one server) or postgres (server.postgres_dsn)"},
		config.Key{Name: "server.postgres_dsn", Default: "", Usage: "PostgreSQL connection string when server.store is postgres, e.g. postgres://paddock:SECRET@db:5432/paddock"},
		config.Key{Name: "server.replica_id", Default: "", Usage: "this server's id among the replicas sharing one PostgreSQL store (logged at start, shown by agent ls and host ls); empty: the host name and a random suffix", Flag: "replica-id", Cmds: []string{"server"}},
		config.Key{Name: "server.postgres_notify", Default: true, Usage: "with server.store postgres: wake the other replicas through LISTEN/NOTIFY when a task is queued or a cancel requested (false: they notice within their polls, 200ms for new tasks and server.sync_interval for cancels)"},
		config.Key{Name: "server.sync_interval", Default: 2 * time.Second, Usage: "with several replicas: how often a replica reads the store for what the others changed about its agents' tasks (cancels, leases ended) and for tasks clients wait on", Positive: true},
		config.Key{Name: "server.locality_delay", Default: 500 * time.Millisecond, Usage: "how long a task with input blobs waits for a free slot on a host whose cache holds them (while that host keeps launching tasks) before it takes any free slot (delay scheduling; counted from the first free slot it passed up, and at least as long as the free slot's host would take to fetch its inputs at its measured rate; never more than 20 delays); 0: off"},
		config.Key{Name: "server.sqlite_synchronous", Default: "FULL", Usage: "SQLite synchronous pragma: FULL (an acknowledged task survives a power loss) or NORMAL (faster; survives a killed server, not a power loss)"},
	)
	config.Register(serverBlobKeys...)
	addCommand(10, newServerCmd)
}

func newServerCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "server",
		Short: "Run the Paddock server: durable task queue, agent sessions, client API",
		Long: `Run the Paddock server. It keeps the task queue in data_dir/paddock.db (SQLite, WAL),
serves agents on server.agent_listen and clients on server.listen (gRPC and JSON over
HTTP, plus /metrics and /healthz). Outside dev mode (--dev) clients need server.token
(PADDOCK_SERVER_TOKEN).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := app.Cfg.V
			cfg := sched.Config{
				Version: buildinfo.String(), Dev: v.GetBool("server.dev"), Token: v.GetString("server.token"),
				AgentToken: v.GetString("server.agent_token"), HeartbeatInterval: v.GetDuration("server.heartbeat_interval"),
				LeaseTTL: v.GetDuration("server.lease_ttl"), MaxInlineBytes: v.GetInt("server.max_inline_bytes"),
				DefaultTimeout: v.GetDuration("server.default_task_timeout"), DefaultMaxAttempts: v.GetInt("server.default_max_attempts"),
				ScheduleToStartTimeout: v.GetDuration("server.schedule_to_start_timeout"),
				RetryBase:              v.GetDuration("server.retry_base"), RetryMax: v.GetDuration("server.retry_max"), Logger: app.Log,
				ReplicaID: v.GetString("server.replica_id"), SyncInterval: v.GetDuration("server.sync_interval"),
				LocalityDelay: localityDelay(v), VouchedTimeout: offIfZero(v.GetDuration("server.vouched_timeout")),
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			dir := v.GetString("data_dir")
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return fmt.Errorf("creating data_dir %s: %w", dir, err)
			}
			ctx := cmd.Context()
			blobs, err := openServerBlobs(ctx, v, dir)
			if err != nil {
				return err
			}
			blobs.apply(&cfg)
			if cfg.TaskRetention, err = taskRetention(v); err != nil {
				return err
			}
			if cfg.OnlineSLA, err = onlineSLA(v); err != nil {
				return err
			}
			if cfg.Tenants, err = tenantsConfig(v); err != nil {
				return err
			}
			if cfg.Prices, err = prices(v); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			st, err := openServerStore(ctx, v, dir)
			if err != nil {
				return err
			}
			defer st.Close()
			if _, shared := st.(store.Shared); shared && v.GetString("server.blob_store") == "fs" {
				app.Log.Warn("blobs are not shared: server.store is postgres (several replicas may share it) but server.blob_store is fs, on this server's disk; "+
					"a blob written through one replica is missing on the others: set server.blob_store to s3 when running several replicas", "blob_dir", v.GetString("server.blob_dir"))
			}
			srv, err := sched.New(cfg, st)
			if err != nil {
				return err
			}
			fmt.Fprintf(app.Out, "paddock server: replica %s, store %s\n", srv.ReplicaID(), st.Describe())
			// An empty server.agent_listen serves no TCP agents: guests reach the
			// server only through their hosts' relays on the cluster port.
			var al net.Listener
			closeAgent := func() {
				if al != nil {
					al.Close()
				}
			}
			if addr := v.GetString("server.agent_listen"); addr != "" {
				if !cfg.Dev && cfg.AgentToken == "" {
					return errors.New("server.agent_listen is set but server.agent_token is empty: any process that reaches the agent port could act as an agent; " +
						"set server.agent_token (PADDOCK_SERVER_AGENT_TOKEN) and give TCP agents the same token (paddock-agent --token), " +
						"or set server.agent_listen to \"\" to serve agents only through host daemons")
				}
				if al, err = net.Listen("tcp", addr); err != nil {
					return fmt.Errorf("listening on server.agent_listen: %w", err)
				}
			}
			cl, err := net.Listen("tcp", v.GetString("server.listen"))
			if err != nil {
				closeAgent()
				return fmt.Errorf("listening on server.listen: %w", err)
			}
			ls := sched.Listeners{Agent: al, Client: cl}
			if addr := v.GetString("server.cluster_listen"); addr != "" {
				if cfg.Dev {
					ls.ClusterTLS, err = pki.DevServerTLS(filepath.Join(dir, "pki"))
				} else {
					ls.ClusterTLS, err = pki.ServerTLS(v.GetString("server.cluster_tls_cert"), v.GetString("server.cluster_tls_key"), v.GetString("server.cluster_tls_ca"))
				}
				if err != nil {
					closeAgent()
					cl.Close()
					return fmt.Errorf("cluster port TLS: %w (or set server.cluster_listen to \"\" to serve no hosts)", err)
				}
				if ls.Cluster, err = net.Listen("tcp", addr); err != nil {
					closeAgent()
					cl.Close()
					return fmt.Errorf("listening on server.cluster_listen: %w", err)
				}
			}
			sdReady(ctx, app.Log) // the store is open and every port is bound (sdnotify.go)
			return ignoreCanceled(srv.RunWith(ctx, ls))
		},
	}
}

// openServerStore opens the task store server.store names: SQLite in the data
// directory (one server), or PostgreSQL at server.postgres_dsn (several servers can
// share it).
func openServerStore(ctx context.Context, v *viper.Viper, dir string) (store.Store, error) {
	switch kind := v.GetString("server.store"); kind {
	case "sqlite":
		return sqlite.Open(ctx, filepath.Join(dir, "paddock.db"), sqlite.Options{Synchronous: v.GetString("server.sqlite_synchronous")})
	case "postgres":
		dsn := v.GetString("server.postgres_dsn")
		if dsn == "" {
			return nil, errors.New("server.store is postgres but server.postgres_dsn is empty: set it (or PADDOCK_SERVER_POSTGRES_DSN), e.g. postgres://paddock:SECRET@db:5432/paddock")
		}
		st, err := postgres.Open(ctx, dsn, postgres.Options{Notify: v.GetBool("server.postgres_notify")})
		if err != nil {
			return nil, fmt.Errorf("server.postgres_dsn: %w", err)
		}
		return st, nil
	default:
		return nil, fmt.Errorf("server.store %q: use sqlite (one server, the data directory) or postgres (server.postgres_dsn)", kind)
	}
}

func ignoreCanceled(err error) error {
	if err == context.Canceled {
		return nil
	}
	return err
}

// localityDelay reads server.locality_delay as sched.Config.LocalityDelay (0 turns the
// preference off: negative in the config struct).
// offIfZero maps a duration key's 0 ("off" in the config) to sched.Config's -1 (its 0
// means the default).
func offIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func localityDelay(v *viper.Viper) time.Duration {
	if d := v.GetDuration("server.locality_delay"); d > 0 {
		return d
	}
	return -1
}
