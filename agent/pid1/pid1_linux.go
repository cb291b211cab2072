//go:build linux

package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// IsInit reports whether this process is PID 1.
func IsInit() bool { return os.Getpid() == 1 }

// Mount is one filesystem MountAll mounts.
type Mount struct {
	Source, Target, FSType, Data string
	Flags                        uintptr
}

// Mounts are the filesystems a guest's init mounts, in order.
var Mounts = []Mount{
	{"proc", "/proc", "proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{"sysfs", "/sys", "sysfs", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{"devtmpfs", "/dev", "devtmpfs", "mode=0755", unix.MS_NOSUID},
	{"tmpfs", "/tmp", "tmpfs", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
	{"tmpfs", "/run", "tmpfs", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
}

// MountAll creates the mount points and mounts Mounts. A target that is already a
// mount (EBUSY) is left alone. Only PID 1 may call it: it refuses otherwise, so that
// an agent started on a host never mounts anything.
func MountAll() error {
	if !IsInit() {
		return errors.New("pid1: refusing to mount filesystems: this process is not PID 1")
	}
	for _, m := range Mounts {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return fmt.Errorf("creating mount point %s: %w", m.Target, err)
		}
		if err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w", m.FSType, m.Target, err)
		}
	}
	return nil
}

// UseConsole points stdin, stdout and stderr at /dev/console (the kernel's console,
// e.g. ttyS0 with console=ttyS0), so messages and fatal errors reach the console log.
func UseConsole() error {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("opening /dev/console: %w", err)
	}
	defer f.Close()
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("redirecting fd %d to /dev/console: %w", fd, err)
		}
	}
	return nil
}

// Module is a kernel module file to load.
type Module struct {
	Name string
	Path string // a plain (uncompressed) .ko file
}

// LoadModules loads mods in the order given (dependencies first) with finit_module(2),
// falling back to init_module(2) where finit_module is unavailable. A module that is
// already loaded (EEXIST) is fine. The first failure stops and names the module.
func LoadModules(mods []Module) error {
	for _, m := range mods {
		if err := loadModule(m.Path); err != nil {
			return fmt.Errorf("loading kernel module %s (%s): %w", m.Name, m.Path, err)
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENOSYS) {
		data, rerr := io.ReadAll(f)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(data, "")
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// Supervise starts argv[0] with argv and env as a child of this process, reaps every
// child that exits (PID 1 inherits all orphans) and returns when that child has exited,
// with its wait status. Reaping uses a SIGCHLD loop around wait4(-1, WNOHANG). SIGTERM,
// SIGINT and SIGHUP received meanwhile are forwarded to the child.
//
// The child is started with os.StartProcess and never waited on by os/exec, so reaping
// with wait4(-1) cannot steal a status that another goroutine waits for. Keep it that
// way: nothing else in PID 1 may start processes while Supervise runs.
func Supervise(argv, env []string) (unix.WaitStatus, error) {
	st, _, err := SuperviseWith(argv, env, SuperviseOptions{})
	return st, err
}

// SuperviseWith is Supervise that also stops the child when opt.Stop yields (SIGTERM,
// then SIGKILL to its process group after opt.Grace), printing each step on
// opt.Console. stopped reports whether the child exited after such a request.
func SuperviseWith(argv, env []string, opt SuperviseOptions) (st unix.WaitStatus, stopped bool, err error) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)
	defer signal.Stop(sigs)
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return 0, false, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	s := &stopper{pid: p.Pid, grace: opt.Grace, console: opt.Console}
	if s.grace <= 0 {
		s.grace = DefaultStopGrace
	}
	if s.console == nil {
		s.console = os.Stdout
	}
	defer s.stop()
	for {
		if st, done := reap(p.Pid); done {
			return st, s.timer != nil, nil
		}
		select {
		case sig := <-sigs:
			if sig != unix.SIGCHLD {
				_ = p.Signal(sig)
			}
		case req := <-opt.Stop:
			s.begin(req)
		case <-s.expired():
			s.kill()
		}
	}
}

// reap collects every exited child without blocking; done reports whether child was
// among them.
func reap(child int) (status unix.WaitStatus, done bool) {
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(-1, &st, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return status, done
		}
		if pid == child {
			status, done = st, true
		}
	}
}

// PowerOff syncs the filesystems and powers the machine off (reboot(2) with
// LINUX_REBOOT_CMD_POWER_OFF), so libvirt sees the domain stop. It returns only if the
// call fails (e.g. not PID 1 / no CAP_SYS_BOOT).
func PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("powering off: %w", err)
	}
	return nil
}

// Fatal prints err on the console (and stderr) and powers off. It never returns: if
// power-off fails it sleeps forever rather than let PID 1 exit (a kernel panic).
func Fatal(err error) {
	msg := fmt.Sprintf("paddock-agent: fatal: %v; powering off\n", err)
	fmt.Fprint(os.Stderr, msg)
	if c, cerr := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); cerr == nil {
		fmt.Fprint(c, msg)
		c.Close()
	}
	if perr := PowerOff(); perr != nil {
		fmt.Fprintf(os.Stderr, "paddock-agent: %v\n", perr)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// FindPort returns the device (e.g. /dev/vport1p1) of the virtio-serial port named
// name, looking in sysDir/class/virtio-ports/*/name (sysDir is normally /sys). It polls
// until the port appears or ctx ends.
func FindPort(ctx context.Context, sysDir, name string) (string, error) {
	pattern := filepath.Join(sysDir, "class", "virtio-ports", "*", "name")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		files, _ := filepath.Glob(pattern)
		var seen []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			n := strings.TrimSpace(string(b))
			seen = append(seen, n)
			if n == name {
				dev := filepath.Join("/dev", filepath.Base(filepath.Dir(f)))
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("virtio-serial port %q not found in %s (ports seen: %v): is the virtio_console module loaded and the channel defined on the domain?", name, filepath.Dir(filepath.Dir(pattern)), seen)
		case <-tick.C:
		}
	}
}

// Uptime returns the time since the kernel started, from /proc/uptime.
func Uptime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, fmt.Errorf("reading uptime: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("parsing /proc/uptime: empty")
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/uptime %q: %w", f[0], err)
	}
	return time.Duration(s * float64(time.Second)), nil
}
