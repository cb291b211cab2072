package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/paddockvm/paddock/agent"
	"github.com/paddockvm/paddock/hostd"
	"github.com/paddockvm/paddock/hypervisor"
	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/images/kmod"
	"github.com/paddockvm/paddock/internal/buildinfo"
	"github.com/paddockvm/paddock/internal/logging"
	"github.com/paddockvm/paddock/internal/pki"
	"github.com/paddockvm/paddock/sched"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/vmpool"
	"github.com/paddockvm/paddock/vmpool/hostload"
)

func init() { addCommand(5, newDevCmd) }

// Files `paddock dev` keeps in its data directory (besides paddock.db, images/ and pki/).
const (
	devLockFile   = "dev.lock"    // flock held while a paddock dev runs; holds its pid
	devHostIDFile = "dev-host-id" // the dev host id, stable across runs of this data dir
	devTokenFile  = "token"       // the client (and TCP agent) bearer token
	devLogFile    = "dev.log"     // the full log of the last run (the one before: dev.log.1)
	devPoolName   = "dev"
	devRunRoot    = "/run/paddock" // guest directories: /run/paddock/<host id>/<guest>
	// devDefaultMemoryMiB is a guest's memory unless --memory or the image asks for more.
	devDefaultMemoryMiB = 384
)

// devOptions are the flags of `paddock dev` that are not configuration keys.
type devOptions struct {
	kernel        string
	handlersDir   string
	guests, max   int
	memory        int
	clusterListen string
	metricsListen string
	bootTimeout   time.Duration
	warmStart     string
	handlerStart  string
}

// DefaultDevDataDir is where `paddock dev` keeps its state unless --data-dir (or
// PADDOCK_DATA_DIR) says otherwise: /var/lib/paddock/dev for root, else
// $XDG_STATE_HOME/paddock/dev (~/.local/state/paddock/dev). It is not data_dir's
// default (/var/lib/paddock): a dev run never touches a real server's database.
func DefaultDevDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/paddock/dev"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "paddock", "dev")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "state", "paddock", "dev")
}

func newDevCmd(app *App) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a server, a host daemon and two warm guests in one process, for trying Paddock",
		Long: `Run Paddock on this machine in one process with embedded defaults, like nomad agent -dev:

  - the server, with its SQLite database in the dev data directory (--data-dir; default
    /var/lib/paddock/dev for root, else ~/.local/state/paddock/dev; never data_dir's
    default, so a real server's data is never touched), a generated client token
    (<data dir>/token) and a generated dev CA for the cluster port (<data dir>/pki);
  - the host daemon on local libvirt (hypervisor.uri), with one pool "dev" of warm
    micro-VM guests (--guests, default 2; up to --max-guests under load);
  - the guests' image, built on first use from the host's kernel (--kernel: a file, or a
    directory searched for the newest vmlinuz-*), paddock-agent beside this binary and
    every handler in bin/handlers beside it (--handlers-dir). Images are content-
    addressed: later runs reuse it until an input changes.

It prints where the API, /metrics and the data directory are and how to submit a task,
and shows the guests as they boot. The full log goes to <data dir>/dev.log; warnings
and errors also to stderr. Ctrl-C destroys the guests and stops; the database, image
and token stay for the next run. After a crash (kill -9) the next paddock dev on the
same data directory destroys the guests the crashed one left.`,
		Example: `  sudo paddock dev
  sudo paddock dev --data-dir /tmp/pd --listen 127.0.0.1:0 --cluster-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), app, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.kernel, "kernel", "/boot", "guest kernel: a bzImage file, or a directory searched for the newest vmlinuz-*")
	f.StringVar(&o.handlersDir, "handlers-dir", "", "directory of handler binaries put in the image, one task handler per file (default: handlers/ beside this binary)")
	f.IntVar(&o.guests, "guests", 2, "warm guests to keep booted and idle (the pool's min_idle)")
	f.IntVar(&o.max, "max-guests", 3, "most guests at once (the pool's max)")
	f.IntVar(&o.memory, "memory", 0, "memory of each guest in MiB (default: 384, or more when the image needs it)")
	f.StringVar(&o.clusterListen, "cluster-listen", "127.0.0.1:7072", "cluster port (the host daemon connects here over mutual TLS); server.cluster_listen")
	f.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:7073", "address of the host daemon's /metrics; host.metrics_listen")
	f.DurationVar(&o.bootTimeout, "boot-timeout", vmpool.DefaultBootTimeout, "a guest with no ready line by then is replaced")
	f.StringVar(&o.warmStart, "warm-start", vmpool.WarmCold, "how guests start: cold (boot) or snapshot (restore a saved template; the pool's warm_start)")
	f.StringVar(&o.handlerStart, "handler-start", "", "when the guests' agents start their handlers: lazy (on each handler's first task; the default) or eager (all at once; with --warm-start snapshot, in the template before its snapshot): the image's agent config handler_start")
	return cmd
}

// devDataDir is --data-dir or PADDOCK_DATA_DIR when given, else DefaultDevDataDir.
func devDataDir(app *App) (string, error) {
	dir := DefaultDevDataDir()
	if src := app.Cfg.Source("data_dir"); strings.HasPrefix(src, "flag") || strings.HasPrefix(src, "env") {
		dir = app.Cfg.V.GetString("data_dir")
	}
	if dir == "" {
		return "", errors.New("dev data directory is empty: pass --data-dir DIR")
	}
	return filepath.Abs(dir)
}

func runDev(ctx context.Context, app *App, o devOptions) error {
	v := app.Cfg.V
	out := app.Out
	say := func(format string, a ...any) { fmt.Fprintf(out, "paddock dev: "+format+"\n", a...) }
	start := time.Now()

	// Flags first: nothing is touched for a bad command line.
	switch {
	case o.guests < 0:
		return usageError{fmt.Errorf("--guests %d: use 0 or more", o.guests)}
	case o.max < 1 || o.max < o.guests:
		return usageError{fmt.Errorf("--max-guests %d: use at least 1 and at least --guests (%d)", o.max, o.guests)}
	case o.memory != 0 && o.memory < vmpool.MinMemoryMiB:
		return usageError{fmt.Errorf("--memory %d: give each guest at least %d MiB, e.g. 256", o.memory, vmpool.MinMemoryMiB)}
	}
	hvCfg, err := hypervisorConfig(app)
	if err != nil {
		return err
	}

	// The data directory, locked against a second paddock dev on it.
	dir, err := devDataDir(app)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the dev data directory %s: %w (pass --data-dir DIR to use another)", dir, err)
	}
	unlock, err := lockDevDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	hostID, err := devHostID(dir)
	if err != nil {
		return err
	}
	token, err := devToken(dir)
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, devLogFile)
	log, closeLog, err := devLogger(app, logPath)
	if err != nil {
		return err
	}
	defer closeLog()

	// The data plane: blobs in <data dir>/blobs, the host cache in <data dir>/cache.
	blobs, err := openServerBlobs(ctx, v, dir)
	if err != nil {
		return err
	}
	cc, err := hostCacheConfig(v, dir, filepath.Join(devRunRoot, hostID), log.With("side", "host"))
	if err != nil {
		return err
	}
	bw, err := hostBandwidthConfig(v)
	if err != nil {
		return err
	}

	// What goes into the image: checked before anything listens or boots.
	spec, err := devImageSpec(o)
	if err != nil {
		return err
	}
	imgDir := v.GetString("images.dir")
	if imgDir == "" {
		imgDir = filepath.Join(dir, "images")
	}
	if err := qemuReachable(imgDir); err != nil {
		return err
	}

	// Ports.
	var lis []net.Listener
	closeAll := func() {
		for _, l := range lis {
			l.Close()
		}
	}
	listen := func(addr, key, flag string) (net.Listener, error) {
		l, err := devListen(addr, key, flag)
		if err == nil {
			lis = append(lis, l)
		}
		return l, err
	}
	clientL, err := listen(v.GetString("server.listen"), "server.listen", "--listen")
	if err != nil {
		return err
	}
	agentL, err := listen(v.GetString("server.agent_listen"), "server.agent_listen", "--agent-listen")
	if err != nil {
		closeAll()
		return err
	}
	clusterL, err := listen(o.clusterListen, "server.cluster_listen", "--cluster-listen")
	if err != nil {
		closeAll()
		return err
	}
	metricsL, err := listen(o.metricsListen, "host.metrics_listen", "--metrics-listen")
	if err != nil {
		closeAll()
		return err
	}
	defer closeAll()

	// libvirt.
	hv, err := devConnect(ctx, hvCfg, log)
	if err != nil {
		return err
	}
	defer hv.Close()
	// A second signal while stopping: destroy the guests at once, without the host
	// daemon's drain (cmd/paddock: cli.ForceStop), so that no guest outlives us.
	defer onForceStop(destroyHostGuests(hv, hostID, log))()

	say("data directory %s (SQLite paddock.db, images/, pki/, token; log: %s)", dir, logPath)
	say("libvirt %s; guests run under %s (%s)", hv.URI(), hv.Accel().Accel, hv.Accel().Reason)

	// The image (cached by content).
	store, err := images.Open(imgDir)
	if err != nil {
		return err
	}
	var hnames []string
	for _, h := range spec.Handlers {
		hnames = append(hnames, h.Name)
	}
	say("image: kernel %s, agent %s, handlers %s", spec.Kernel, spec.Agent, strings.Join(hnames, ", "))
	buildStart := time.Now()
	var lastStep string
	img, err := store.Build(ctx, spec, images.WithProgress(func(e images.Event) {
		if e.Step != lastStep {
			lastStep = e.Step
			log.Info("building image", "step", e.Step, "detail", e.Detail)
		}
	}))
	if err != nil {
		return fmt.Errorf("building the dev image: %w", err)
	}
	// The build held the compressed initramfs in memory; give it back to the OS now
	// rather than when the scavenger gets to it, so the server and host daemon that
	// run on in this process start from their own footprint.
	debug.FreeOSMemory()
	if img.Cached {
		say("image %.12s (cached in %s)", img.Digest, imgDir)
	} else {
		say("image %.12s built in %s (cached for later runs in %s)", img.Digest, time.Since(buildStart).Round(100*time.Millisecond), imgDir)
	}
	need := vmpool.RequiredMemoryMiB(img)
	if o.memory == 0 {
		// vmpool's estimate counts the unpacked files once; the handler processes and
		// the unpacking itself need more (with four unstripped example handlers a
		// 256 MiB guest ran out while unpacking, and 288 MiB with five).
		o.memory = max(devDefaultMemoryMiB, (need+96+31)/32*32)
	} else if o.memory < need {
		return fmt.Errorf("--memory %d MiB is below what the image needs (%d MiB: its initramfs is unpacked into guest RAM): pass --memory %d, or fewer handlers (--handlers-dir)", o.memory, need, need)
	}

	// The server.
	cfg := sched.Config{
		// TCP agents that join a dev server send the same generated token (agent --token).
		Version: buildinfo.String(), Token: token, AgentToken: token,
		HeartbeatInterval: v.GetDuration("server.heartbeat_interval"), LeaseTTL: v.GetDuration("server.lease_ttl"),
		MaxInlineBytes: v.GetInt("server.max_inline_bytes"), DefaultTimeout: v.GetDuration("server.default_task_timeout"),
		DefaultMaxAttempts: v.GetInt("server.default_max_attempts"), RetryBase: v.GetDuration("server.retry_base"),
		ScheduleToStartTimeout: v.GetDuration("server.schedule_to_start_timeout"),
		RetryMax:               v.GetDuration("server.retry_max"), Logger: log.With("side", "server"), LocalityDelay: localityDelay(v),
		VouchedTimeout: offIfZero(v.GetDuration("server.vouched_timeout")),
	}
	if v.GetBool("server.dev") { // --dev: an open client API, as paddock server --dev
		cfg.Dev, cfg.Token, cfg.AgentToken = true, "", ""
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
	pkiDir := filepath.Join(dir, "pki")
	srvTLS, err := pki.DevServerTLS(pkiDir)
	if err != nil {
		return fmt.Errorf("dev CA in %s: %w", pkiDir, err)
	}
	hostTLS, err := pki.DevHostTLS(pkiDir, hostID)
	if err != nil {
		return fmt.Errorf("dev host certificate: %w", err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(dir, "paddock.db"), sqlite.Options{Synchronous: v.GetString("server.sqlite_synchronous")})
	if err != nil {
		return fmt.Errorf("opening the dev database: %w", err)
	}
	defer st.Close()
	srv, err := sched.New(cfg, st)
	if err != nil {
		return err
	}

	// The host daemon with one pool.
	pool := vmpool.PoolConfig{Name: devPoolName, Image: img.Digest, VCPUs: 1, MemoryMiB: o.memory, MinIdle: o.guests, Max: o.max,
		IdleTimeout: 5 * time.Minute, BootTimeout: o.bootTimeout, WarmStart: o.warmStart}
	if err := pool.Validate(); err != nil {
		return err
	}
	// Snapshots live with the data (reused by the next run on it, gone when it is
	// deleted), not in the run directory, which each stop removes.
	pcfg := vmpool.Config{HostID: hostID, RunDir: filepath.Join(devRunRoot, hostID), SnapshotDir: filepath.Join(dir, "snapshots"),
		Pools: []vmpool.PoolConfig{pool}, Tick: v.GetDuration("host.tick"),
		MaxConcurrentStarts: v.GetInt("host.max_concurrent_starts"),
		Thresholds: hostload.Thresholds{CPUPercent: v.GetFloat64("host.thresholds.cpu_percent"),
			MinMemAvailableMiB: uint64(max(v.GetInt64("host.thresholds.min_mem_available_mib"), 0)), NICBytesPerSec: v.GetFloat64("host.thresholds.nic_bytes_per_sec")}}
	d, err := hostd.New(hostd.Config{Server: clusterL.Addr().String(), TLS: hostTLS, Pools: pcfg, LoadInterval: v.GetDuration("host.load_interval"),
		Accel: string(hv.Accel().Accel), Version: buildinfo.String(), Logger: log.With("side", "host"), Cache: cc, Bandwidth: bw}, hv, store)
	if err != nil {
		return err
	}

	// Run: the server first, the host daemon once it is up; stop in reverse.
	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	hostCtx, stopHost := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHost()
	srvDone, hostDone := make(chan error, 1), make(chan error, 1)
	go func() {
		srvDone <- srv.RunWith(srvCtx, sched.Listeners{Agent: agentL, Client: clientL, Cluster: clusterL, ClusterTLS: srvTLS})
	}()
	lis = nil // the server owns them now
	msrv := &http.Server{Handler: promhttp.HandlerFor(d.Registry(), promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
	go msrv.Serve(metricsL)
	defer msrv.Close()
	go func() { hostDone <- d.Run(hostCtx) }()

	api := "http://" + clientL.Addr().String()
	tokenNote := "token: " + filepath.Join(dir, devTokenFile)
	if cfg.Dev {
		tokenNote = "no token needed: --dev"
	}
	say("client API  %s   (%s)", api, tokenNote)
	say("metrics     %s/metrics (server), http://%s/metrics (host)", api, metricsL.Addr())
	say("cluster     %s (mutual TLS, dev CA in %s); host id %s", clusterL.Addr(), pkiDir, hostID)
	say("pool %q: %d warm guest(s), at most %d, 1 vCPU and %d MiB each; booting…", devPoolName, o.guests, o.max, o.memory)

	watch := &devWatch{say: say, d: d, srv: srv, want: o.guests, start: start}
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-srvDone:
			srvDone <- err
			runErr = fmt.Errorf("the server stopped: %v", err)
			break loop
		case err := <-hostDone:
			hostDone <- err
			runErr = fmt.Errorf("the host daemon stopped: %v", err)
			break loop
		case <-ticker.C:
			if err := watch.poll(); err != nil {
				runErr = err
				break loop
			}
			if watch.readyNow() {
				say("ready in %s. Try, in another terminal:", time.Since(start).Round(100*time.Millisecond))
				fmt.Fprintf(out, "    export PADDOCK_CLIENT_SERVER=%s PADDOCK_CLIENT_TOKEN=$(cat %s)\n", api, filepath.Join(dir, devTokenFile))
				fmt.Fprintf(out, "    paddock task submit --type checksum --input f=README.md --wait\n")
				fmt.Fprintf(out, "    paddock blob put FILE; paddock task submit --type checksum --input big=FILE --wait; paddock task output ID\n")
				fmt.Fprintf(out, "    paddock vm ls; paddock agent ls; paddock task ls\n")
				say("Ctrl-C stops paddock dev and removes its guests.")
			}
		}
	}

	// Stop: guests first (the host daemon destroys them), then the server.
	devStopping.Store(true)
	say("stopping: destroying the guests… (a second Ctrl-C destroys them at once and exits)")
	stopHost()
	var hostErr error
	select {
	case hostErr = <-hostDone:
	case <-time.After(2 * time.Minute):
		hostErr = errors.New("the host daemon did not stop within 2m")
	}
	left := domainsOfHost(context.Background(), hv, hostID)
	stopSrv()
	srvErr := <-srvDone
	// With no guest left, nothing in the run directory is in use: remove what a guest
	// stopped mid-start may have left there too (its console log, in/out). With guests
	// left, their sockets and disks stay for the next paddock dev on this data dir.
	rm := os.Remove
	if len(left) == 0 {
		rm = os.RemoveAll
	}
	if err := rm(pcfg.RunDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("removing the dev run directory", "dir", pcfg.RunDir, "err", err)
	}
	if len(left) > 0 {
		say("guests still defined after stopping: %s (the next paddock dev on %s destroys them)", strings.Join(left, ", "), dir)
	} else {
		say("stopped; guests removed. Data kept in %s (delete it to start afresh).", dir)
	}
	return errors.Join(runErr, ignoreCanceled(hostErr), ignoreCanceled(srvErr))
}

// devWatch turns the pool's guests and the server's agents into progress lines.
type devWatch struct {
	say   func(string, ...any)
	d     *hostd.Daemon
	srv   *sched.Server
	want  int
	start time.Time

	seen     map[string]*devGuest
	order    int
	ready    bool // every warm guest registered once
	told     bool // readyNow returned true
	failures int
	poolErr  string
}

type devGuest struct {
	n          int
	booted     bool
	registered bool
}

// poll prints what changed since the last call; it fails when the pool cannot run.
func (w *devWatch) poll() error {
	if w.seen == nil {
		w.seen = map[string]*devGuest{}
	}
	for _, p := range w.d.Manager().Pools() {
		if p.State == vmpool.PoolError && p.Error != w.poolErr {
			w.poolErr = p.Error
			return fmt.Errorf("pool %q cannot run: %s", p.Name, p.Error)
		}
		if p.BootFailures > w.failures {
			w.say("a guest failed to boot (%d in a row; details in the log), retrying", p.BootFailures)
		}
		w.failures = p.BootFailures
	}
	agents := map[string]bool{}
	for _, a := range w.srv.Agents() {
		if a.State == "connected" {
			agents[a.ID] = true
		}
	}
	now := map[string]bool{}
	guests := w.d.Manager().Snapshot()
	sort.Slice(guests, func(i, j int) bool { return guests[i].Created.Before(guests[j].Created) })
	for _, g := range guests {
		if g.State == vmpool.StateStopping {
			continue
		}
		now[g.Name] = true
		s := w.seen[g.Name]
		if s == nil {
			w.order++
			s = &devGuest{n: w.order}
			w.seen[g.Name] = s
			w.say("%s %s booting…", w.label(s), g.Name)
		}
		if !s.booted && g.State != vmpool.StateBooting {
			s.booted = true
			w.say("%s %s up after %s, agent connecting…", w.label(s), g.Name, g.BootTime.Round(100*time.Millisecond))
		}
		if !s.registered && agents[g.Name] {
			s.registered = true
			var types []string
			for _, a := range w.srv.Agents() {
				if a.ID == g.Name {
					for _, t := range a.Types {
						types = append(types, t.Name)
					}
				}
			}
			w.say("%s %s registered (serves %s)", w.label(s), g.Name, strings.Join(types, ", "))
		}
	}
	for name, s := range w.seen {
		if !now[name] {
			w.say("%s %s gone", w.label(s), name)
			delete(w.seen, name)
		}
	}
	if !w.ready {
		n := 0
		for _, s := range w.seen {
			if s.registered {
				n++
			}
		}
		w.ready = n >= w.want
	}
	return nil
}

func (w *devWatch) label(s *devGuest) string {
	if !w.ready && s.n <= w.want {
		return fmt.Sprintf("guest %d/%d", s.n, w.want)
	}
	return fmt.Sprintf("guest #%d", s.n)
}

// readyNow is true once: when every warm guest first has a registered agent.
func (w *devWatch) readyNow() bool {
	if w.ready && !w.told {
		w.told = true
		return true
	}
	return false
}

// devImageSpec is the host's kernel, paddock-agent beside this binary and the handlers.
func devImageSpec(o devOptions) (images.Spec, error) {
	var spec images.Spec
	fi, err := os.Stat(o.kernel)
	switch {
	case err != nil:
		return spec, fmt.Errorf("--kernel %s: %v: point it at a kernel image (e.g. /boot/vmlinuz-$(uname -r)) or a directory holding vmlinuz-* (`make setup` installs linux-image-amd64)", o.kernel, errors.Unwrap(err))
	case fi.IsDir():
		p, ver, err := kmod.NewestKernel(o.kernel)
		if err != nil {
			return spec, fmt.Errorf("no kernel image for the guests: no vmlinuz-* in %s: install one (`make setup` installs linux-image-amd64) or pass --kernel /path/to/vmlinuz", o.kernel)
		}
		spec.Kernel, spec.KernelVersion = p, ver
	default:
		spec.Kernel = o.kernel
	}
	agentPath, err := defaultAgent()
	if err != nil {
		return spec, err
	}
	spec.Agent = agentPath
	hdir := o.handlersDir
	if hdir == "" {
		self, err := os.Executable()
		if err != nil {
			return spec, fmt.Errorf("finding this binary's directory: %w (pass --handlers-dir)", err)
		}
		hdir = filepath.Join(filepath.Dir(self), "handlers")
	}
	ents, err := os.ReadDir(hdir)
	if err != nil {
		return spec, fmt.Errorf("handlers: %v: run `make build` (it puts the example handlers in bin/handlers beside bin/paddock) or pass --handlers-dir DIR", err)
	}
	for _, e := range ents {
		p := filepath.Join(hdir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			continue
		}
		spec.Handlers = append(spec.Handlers, images.Handler{Name: e.Name(), Path: p})
	}
	if len(spec.Handlers) == 0 {
		return spec, fmt.Errorf("handlers: no executable in %s: run `make build` (it puts the example handlers in bin/handlers) or pass --handlers-dir DIR", hdir)
	}
	switch o.handlerStart {
	case "":
	case agent.HandlerStartLazy, agent.HandlerStartEager:
		spec.AgentConfig = []byte(`{"handler_start":"` + o.handlerStart + `"}`)
	default:
		return spec, fmt.Errorf("--handler-start %q: use %s or %s", o.handlerStart, agent.HandlerStartLazy, agent.HandlerStartEager)
	}
	return spec, nil
}

// qemuReachable checks that QEMU, which runs as its own user under qemu:///system,
// can reach dir (the image store: it reads the kernel and initramfs from there): every
// existing ancestor must be searchable by others.
func qemuReachable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := abs; ; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("image directory %s: QEMU (user libvirt-qemu) cannot reach it: %s is mode %#o: pass --data-dir under a directory others can search (e.g. /var/lib/paddock/dev or /tmp/paddock-dev), or chmod o+x %s",
				abs, p, fi.Mode().Perm(), p)
		}
		if p == "/" || p == filepath.Dir(p) {
			return nil
		}
	}
}

// devListen listens on addr, naming the key and flag to change when it is taken.
func devListen(addr, key, flag string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l, nil
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%s %s is already in use (another paddock dev or paddock server?): stop what uses it, or pass %s HOST:PORT (port 0 picks a free one)", key, addr, flag)
	}
	return nil, fmt.Errorf("listening on %s %s: %w (change it with %s)", key, addr, err, flag)
}

// devConnect connects to libvirt, with a message that says how to start it.
func devConnect(ctx context.Context, cfg hypervisor.Config, log *slog.Logger) (*hypervisor.Libvirt, error) {
	const fix = "start libvirt with `make setup` (scripts/setup.sh starts virtlogd and libvirtd when no init system does), or point --libvirt-uri at a running one"
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	hv, err := hypervisor.Connect(cctx, cfg, hypervisor.WithLogger(log))
	if err != nil {
		if errors.Is(err, hypervisor.ErrInvalid) {
			return nil, err
		}
		return nil, fmt.Errorf("libvirt is not reachable at %s (hypervisor.uri): %w\nfix: %s", cfg.URI, err, fix)
	}
	if cfg.URI == hypervisor.DefaultURI {
		if _, err := os.Stat("/run/libvirt/virtlogd-sock"); err != nil {
			hv.Close()
			return nil, fmt.Errorf("virtlogd is not running (no /run/libvirt/virtlogd-sock): libvirt cannot start guests without it\nfix: %s", fix)
		}
	}
	return hv, nil
}

// domainsOfHost lists the domains labelled with hostID (what paddock dev and a forced
// stop of paddock host must remove).
func domainsOfHost(ctx context.Context, hv hypervisor.Hypervisor, hostID string) []string {
	doms, err := hv.List(ctx)
	if err != nil {
		return nil
	}
	var out []string
	for _, d := range doms {
		if d.Labels[vmpool.LabelHost] == hostID {
			out = append(out, d.Name)
		}
	}
	return out
}

// destroyHostGuests returns a forced-stop cleanup (onForceStop) that destroys every
// domain labelled with hostID.
func destroyHostGuests(hv hypervisor.Hypervisor, hostID string, log *slog.Logger) func(context.Context) {
	return func(ctx context.Context) {
		for _, name := range domainsOfHost(ctx, hv, hostID) {
			if err := hv.Destroy(ctx, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
				log.Error("forced stop: destroying a guest", "guest", name, "err", err)
			}
		}
	}
}

// lockDevDir takes an exclusive flock on <dir>/dev.lock (the kernel drops it when the
// process dies, even by kill -9) and writes the pid into it.
func lockDevDir(dir string) (func(), error) {
	p := filepath.Join(dir, devLockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(f)
		f.Close()
		who := "another paddock dev"
		if pid := strings.TrimSpace(string(b)); pid != "" {
			who += " (pid " + pid + ")"
		}
		return nil, fmt.Errorf("%s is running on the data directory %s: stop it, or pass --data-dir DIR (and other ports) for a second one", who, dir)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		_ = f.Truncate(0)
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// devHostID returns the data directory's host id, making one on the first run. It
// names the dev host's guests' label and its run directory, so a later run finds what
// a crashed one left.
func devHostID(dir string) (string, error) {
	return devSecretFile(filepath.Join(dir, devHostIDFile), 0o644, func() string { return "dev-" + randomHex(4) })
}

// devToken returns the data directory's client token, making one on the first run.
func devToken(dir string) (string, error) {
	return devSecretFile(filepath.Join(dir, devTokenFile), 0o600, func() string { return randomHex(24) })
}

func devSecretFile(p string, mode os.FileMode, mk func() string) (string, error) {
	if b, err := os.ReadFile(p); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	s := mk()
	if err := os.WriteFile(p, []byte(s+"\n"), mode); err != nil {
		return "", fmt.Errorf("writing %s: %w", p, err)
	}
	return s, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// devLogger logs everything at log.level to <data dir>/dev.log (the previous run's log
// becomes dev.log.1) and warnings and errors to stderr; an explicit --log-level or
// PADDOCK_LOG_LEVEL applies to stderr too.
func devLogger(app *App, path string) (*slog.Logger, func(), error) {
	_ = os.Rename(path, path+".1")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the dev log %s: %w", path, err)
	}
	level := app.Cfg.V.GetString("log.level")
	fileLog, err := logging.New(f, level, "json")
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	errLevel := "warn"
	if src := app.Cfg.Source("log.level"); src != "default" {
		errLevel = level
	}
	errLog, err := logging.New(app.Err, errLevel, app.Cfg.V.GetString("log.format"))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	var once sync.Once
	return slog.New(slog.NewMultiHandler(fileLog.Handler(), quietOnStop{errLog.Handler()})), func() { once.Do(func() { f.Close() }) }, nil
}

// devStopping is set once paddock dev stops: the "agent lost"/"host lost" warnings that
// an orderly stop causes then stay in dev.log, off the terminal.
var devStopping atomic.Bool

// quietOnStop passes records on, but only errors once devStopping is set.
type quietOnStop struct{ slog.Handler }

func (q quietOnStop) Enabled(ctx context.Context, l slog.Level) bool {
	if devStopping.Load() && l < slog.LevelError {
		return false
	}
	return q.Handler.Enabled(ctx, l)
}

func (q quietOnStop) WithAttrs(as []slog.Attr) slog.Handler {
	return quietOnStop{q.Handler.WithAttrs(as)}
}
func (q quietOnStop) WithGroup(n string) slog.Handler { return quietOnStop{q.Handler.WithGroup(n)} }
