package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/agent/pid1"
	"github.com/paddockvm/paddock/internal/buildinfo"
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
	fs := flag.NewFlagSet("paddock-agent", flag.ContinueOnError)
	cfgPath := fs.String("config", ConfigPath, "agent configuration file (JSON, see agent.Config)")
	manifestPath := fs.String("manifest", ManifestPath, "image manifest (as PID 1: the modules to load)")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
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
	if err != nil {
		fmt.Fprintf(os.Stderr, "paddock-agent: %v\n", err)
		return 1
	}
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
	fmt.Printf("paddock-agent[%d]: init: mounted /proc /sys /dev /tmp /run, loaded %d kernel modules; starting the agent\n", os.Getpid(), len(mods))
	self, err := os.Executable()
	if err != nil {
		self = "/init"
	}
	st, err := pid1.Supervise(append([]string{self}, os.Args[1:]...), append(os.Environ(), childEnv+"=1"))
	if err != nil {
		pid1.Fatal(err)
	}
	pid1.Fatal(fmt.Errorf("agent exited (%s)", describe(st)))
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

// Run is the agent proper. Today it finds the virtio-serial port cfg.Port, writes the
// ready line (ReadyPrefix, the agent's version and the milliseconds since the kernel
// started), runs the configured self-checks, and then waits for ctx to end.
//
// This is an intermediate step, said plainly: the session with the server (gRPC over
// agent/transport: hello/resync, task assignments, handler runs, results) is not wired
// in yet. It will replace the wait at the end of Run, using the port opened here.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	wait, _ := cfg.portWait()
	findCtx, cancel := context.WithTimeout(ctx, wait)
	dev, err := pid1.FindPort(findCtx, "/sys", cfg.Port)
	cancel()
	if err != nil {
		return err
	}
	port, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening virtio-serial port %s (%s): %w", cfg.Port, dev, err)
	}
	defer port.Close()
	if err := WriteReady(port); err != nil {
		return fmt.Errorf("writing the ready line on %s: %w", dev, err)
	}
	if sc := cfg.SelfCheck; sc != nil {
		if err := runSelfCheck(port, *sc); err != nil {
			return err
		}
	}
	// Seam: the server session goes here (see the doc comment).
	<-ctx.Done()
	return nil
}

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
