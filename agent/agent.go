package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/agent/pid1"
	"github.com/paddockvm/paddock/agent/session"
	"github.com/paddockvm/paddock/agent/transport"
	"github.com/paddockvm/paddock/internal/buildinfo"
	"github.com/paddockvm/paddock/plugins/runner"
)

// childEnv marks the agent process that PID 1 starts (see Main).
const childEnv = "PADDOCK_AGENT_SUPERVISED"

// Main is paddock-agent's entry point; it returns the process exit code.
//
// As PID 1 of a micro-VM (the kernel runs the image's /init) it does the init duties
// (package pid1): mount /proc, /sys, /dev, /tmp and /run, send output to the console,
// load the kernel modules in manifest order, then start itself again as a supervised
// child that runs the agent proper (Run) while PID 1 reaps zombies. When the child
// exits, or on any fatal error, PID 1 prints why on the console and powers off.
//
// Splitting PID 1 from the agent keeps reaping (wait4(-1)) away from the processes the
// agent starts and waits for itself (handler plugins through os/exec).
//
// Otherwise (a service in a full OS image, or the supervised child) it reads the
// configuration and calls Run until SIGTERM or SIGINT; it never mounts anything.
func Main(args []string) int {
	fl := flag.NewFlagSet("paddock-agent", flag.ContinueOnError)
	cfgPath := fl.String("config", ConfigPath, "agent configuration file (JSON, see agent.Config)")
	manifestPath := fl.String("manifest", ManifestPath, "image manifest (as PID 1: the modules to load)")
	version := fl.Bool("version", false, "print the version and exit")
	server := fl.String("server", "", "dial the server's agent port at host:port over TCP (outside a micro-VM; several replicas: host:port,host:port); overrides the config's server")
	id := fl.String("id", "", "agent identity; overrides the config's id (default: paddock.id= on the kernel command line, else the host name and a random suffix, unique per process)")
	token := fl.String("token", "", "join token for the server; overrides the config's token")
	dataDir := fl.String("data-dir", "", "directory for the files of tasks whose blobs come over the server connection (TCP agents); overrides the config's data_dir")
	var handlers handlerFlags
	fl.Var(&handlers, "handler", "handler binary as name=path (repeatable); overrides the config's handlers; its sha256 is pinned at start")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Println("paddock-agent", buildinfo.String())
		return 0
	}
	if pid1.IsInit() {
		initMain(*cfgPath, *manifestPath) // never returns
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil && errors.Is(err, fs.ErrNotExist) && !flagSet(fl, "config") {
		cfg, err = DefaultConfig(), nil // outside an image: flags only
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "paddock-agent: %v\n", err)
		return 1
	}
	if *server != "" {
		cfg.Server = ServerList(*server)
	}
	if *id != "" {
		cfg.ID = *id
	}
	if *token != "" {
		cfg.Token = *token
	}
	if len(handlers) > 0 {
		cfg.Handlers = handlers
	}
	if *dataDir != "" {
		if cfg.DataDir, err = filepath.Abs(*dataDir); err != nil {
			fmt.Fprintf(os.Stderr, "paddock-agent: --data-dir: %v\n", err)
			return 2
		}
	}
	cfg.manifest = *manifestPath
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "paddock-agent: %v\n", err)
		return 1
	}
	return 0
}

// initMain is PID 1: setup, supervise the agent, power off. It never returns.
func initMain(cfgPath, manifestPath string) {
	if err := pid1.MountAll(); err != nil {
		pid1.Fatal(err)
	}
	if err := pid1.UseConsole(); err != nil {
		pid1.Fatal(err)
	}
	// Parse the config here too, so a broken one is reported before anything else.
	if _, err := LoadConfig(cfgPath); err != nil {
		pid1.Fatal(err)
	}
	m, err := LoadManifest(manifestPath)
	if err != nil {
		pid1.Fatal(err)
	}
	mods := make([]pid1.Module, len(m.Modules))
	for i, mod := range m.Modules {
		mods[i] = pid1.Module{Name: mod.Name, Path: mod.Path}
	}
	if err := pid1.LoadModules(mods); err != nil {
		pid1.Fatal(err)
	}
	disk := "no handler disk"
	if hd := m.HandlerDisk; hd != nil {
		dev, err := pid1.MountHandlerDisk("/sys", pid1.HandlerDisk{Serial: hd.Serial, FSType: hd.FSType, Mount: hd.Mount})
		if err != nil {
			pid1.Fatal(err)
		}
		disk = fmt.Sprintf("mounted the handler disk %s read-only on %s", dev, hd.Mount)
	}
	order := pid1.ReportingOrder
	if warmBoot() {
		order = pid1.ReportingOff // until a restored copy has registered (reportRestored)
	}
	if _, err := pid1.SetReportingOrder("/sys", order); errors.Is(err, pid1.ErrNoReporting) {
		fmt.Printf("paddock-agent[%d]: init: %v: memory the guest frees stays with the host's QEMU\n", os.Getpid(), err)
	} else if err != nil {
		fmt.Printf("paddock-agent[%d]: init: %v\n", os.Getpid(), err)
	}
	// The data plane's shared directories (virtio-9p), when the host offers them. A
	// warm-start template leaves them to the agent, which mounts them once restored
	// (QEMU refuses to save the state of a guest with a mounted 9p share).
	if warmBoot() {
		fmt.Printf("paddock-agent[%d]: init: warm-start template (%s=1): the agent mounts the shares once it has its identity\n", os.Getpid(), CmdlineWarmKey)
	} else if _, err := pid1.MountShares("/sys", pid1.DataShares, os.Stdout); err != nil {
		pid1.Fatal(err)
	}
	fmt.Printf("paddock-agent[%d]: init: mounted /proc /sys /dev /tmp /run, loaded %d kernel modules, %s; starting the agent\n", os.Getpid(), len(mods), disk)
	self, err := os.Executable()
	if err != nil {
		self = "/init"
	}
	// The host's graceful shutdown (libvirt's ACPI power button) reaches PID 1 as
	// KEY_POWER on the button driver's evdev device: stop the agent and power off.
	stop, buttons, err := pid1.WatchPowerButton(context.Background(), "/sys", 2*time.Second)
	if err != nil {
		fmt.Printf("paddock-agent[%d]: init: %v; the guest can only be destroyed, not shut down\n", os.Getpid(), err)
	} else {
		fmt.Printf("paddock-agent[%d]: init: watching the power button %v\n", os.Getpid(), buttons)
	}
	st, stopped, err := pid1.SuperviseWith(append([]string{self}, os.Args[1:]...), append(os.Environ(), childEnv+"=1"),
		pid1.SuperviseOptions{Stop: stop, Grace: pid1.DefaultStopGrace})
	if err != nil {
		pid1.Fatal(err)
	}
	if !stopped {
		pid1.Fatal(fmt.Errorf("agent exited (%s)", describe(st)))
	}
	fmt.Printf("paddock-agent[%d]: agent stopped (%s); syncing and powering off\n", os.Getpid(), describe(st))
	if err := pid1.PowerOff(); err != nil {
		pid1.Fatal(err)
	}
	pid1.Fatal(errors.New("power-off returned"))
}

func describe(st unix.WaitStatus) string {
	switch {
	case st.Exited():
		return fmt.Sprintf("exit status %d", st.ExitStatus())
	case st.Signaled():
		return fmt.Sprintf("killed by %v", st.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(st))
}

// Run is the agent proper. Inside a micro-VM (cfg.Server empty) it finds the
// virtio-serial port cfg.Port, writes the ready line (ReadyPrefix, the agent's version
// and the milliseconds since the kernel started), runs the configured self-checks, and
// then runs its session with the server over that port (agent/transport frames it; the
// host daemon relays it). With cfg.Server set it dials the server's agent port over TCP
// instead. Either way the handlers run through plugins/runner, and Run returns when ctx
// ends or the session fails for good.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	tuneGC()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var port *os.File
	if cfg.Server == "" {
		wait, _ := cfg.portWait()
		findCtx, cancel := context.WithTimeout(ctx, wait)
		dev, err := pid1.FindPort(findCtx, "/sys", cfg.Port)
		cancel()
		if err != nil {
			return err
		}
		if port, err = os.OpenFile(dev, os.O_RDWR, 0); err != nil {
			return fmt.Errorf("opening virtio-serial port %s (%s): %w", cfg.Port, dev, err)
		}
		defer port.Close()
	}
	warm := port != nil && warmBoot()
	if port != nil && !warm {
		if err := WriteReady(port); err != nil {
			return fmt.Errorf("writing the ready line on %s: %w", cfg.Port, err)
		}
		if sc := cfg.SelfCheck; sc != nil {
			if err := runSelfCheck(port, *sc); err != nil {
				return err
			}
		}
	}
	manifest := cfg.manifest
	if manifest == "" {
		manifest = ManifestPath
	}
	handlers, err := cfg.handlerSpecs(manifest, log)
	if err != nil {
		return err
	}
	id := cfg.agentID()
	var afterRegister func()                         // once registered (a restored copy's memory work)
	var dial func(context.Context) (net.Conn, error) // nil: TCP (cfg.Server)
	if port != nil && !warm && len(handlers) > 0 {
		// The first session's handshake now, while the runner and the session set up.
		var g *transport.Guest
		g, dial = dialEarly(ctx, port, id, log)
		defer g.Close()
	}
	var r *runner.Runner
	if len(handlers) > 0 {
		if r, err = startRunner(ctx, cfg, handlers, log); err != nil {
			return err
		}
		defer r.Close()
	}
	if warm {
		// A snapshot template: ready once the handlers run, then wait (across the save
		// and every restore) for the identity the host gives this copy. Protobuf's
		// tables for registration are built first, so that the snapshot holds them.
		// With handler_start eager every handler starts here, before the ready line,
		// so the snapshot holds them running and no restored copy pays their start.
		session.WarmCodecs()
		if r != nil && cfg.HandlerStart == HandlerStartEager {
			t0 := time.Now()
			r.StartAll(ctx)
			log.Info("warm start template: handlers started before the snapshot", "took", time.Since(t0).Round(time.Millisecond))
		}
		// The template's free memory is zeroed and left unreported before the save
		// (pid1.QuiesceMemory): the snapshot stores it as zero pages, and each restored
		// copy reports it all once it has registered (reportRestored), which gives back
		// the pages its restore read.
		debug.FreeOSMemory()
		if before, after, zeroed, err := pid1.QuiesceMemory("/proc", quiesceKeepKiB); err != nil {
			log.Warn("warm start: quiescing memory before the snapshot", "err", err)
		} else {
			log.Info("warm start: memory quiesced for the snapshot", "free_kib_before", before, "free_kib_after", after, "zeroed_kib", zeroed)
		}
		if err := WriteReady(port); err != nil {
			return fmt.Errorf("writing the ready line on %s: %w", cfg.Port, err)
		}
		ident, err := ReadIdentity(ctx, port)
		if err != nil {
			return err
		}
		if err := takeIdentity(port, ident); err != nil {
			return fmt.Errorf("taking the identity %s: %w", ident.ID, err)
		}
		id = ident.ID
		log.Info("warm start: identity taken from the host", "id", id)
		afterRegister = func() { go reportRestored("/sys", log) }
		if r != nil {
			var g *transport.Guest
			g, dial = dialEarly(ctx, port, id, log)
			defer g.Close()
		}
	}
	if r == nil {
		// Nothing to serve: an image built without handlers (the image tests boot such
		// images to check PID 1 and the disks). Say so, and stay up for the host.
		log.Warn("no handlers configured or in the image manifest: not starting a session")
		<-ctx.Done()
		return nil
	}
	return serve(ctx, cfg, dial, r, id, afterRegister, log)
}

// quiesceKeepKiB is the free memory a template's QuiesceMemory leaves untouched.
const quiesceKeepKiB = 16 << 10

// WriteReady writes "PADDOCK-AGENT READY version=<v> boot_ms=<ms>\n" to w.
func WriteReady(w io.Writer) error {
	up, err := pid1.Uptime()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s version=%s boot_ms=%d\n", ReadyPrefix, buildinfo.String(), up.Milliseconds())
	return err
}

func (c Config) portWait() (time.Duration, error) {
	if c.PortWait == "" {
		return 10 * time.Second, nil
	}
	d, err := time.ParseDuration(c.PortWait)
	if err != nil || d <= 0 {
		return 0, errors.New("agent config field port_wait: " + fmt.Sprintf("%q", c.PortWait) + " is not a positive Go duration; use e.g. \"10s\"")
	}
	return d, nil
}

// handlerFlags collects --handler name=path flags.
type handlerFlags []HandlerConfig

func (h *handlerFlags) String() string { return fmt.Sprint(*h) }

func (h *handlerFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("want name=path, e.g. checksum=/usr/lib/paddock/handlers/checksum")
	}
	*h = append(*h, HandlerConfig{Name: name, Path: path})
	return nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fl *flag.FlagSet, name string) bool {
	set := false
	fl.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
