//go:build linux

package pid1

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PowerButtonName is the input device name the kernel's ACPI button driver (module
// "button") gives the power button, both the fixed-feature one (ACPI device LNXPWRBN,
// which QEMU's i440fx/PIIX4 machine has) and a control-method one (PNP0C0C).
const PowerButtonName = "Power Button"

// Linux input event constants (linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
)

// inputEventSize is sizeof(struct input_event): a struct timeval, then type (u16),
// code (u16) and value (s32). 24 bytes on 64-bit Linux.
var inputEventSize = int(unsafe.Sizeof(unix.Timeval{})) + 8

// FindPowerButtons returns the evdev device nodes (/dev/input/eventN) of the input
// devices named PowerButtonName, looking in sysDir/class/input/event*/device/name
// (sysDir is normally /sys). They exist once the "button" and "evdev" modules are
// loaded (or built in). It polls until at least one appears or ctx ends; then it
// returns an error listing the input devices it saw.
func FindPowerButtons(ctx context.Context, sysDir string) ([]string, error) {
	pattern := filepath.Join(sysDir, "class", "input", "event*", "device", "name")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		files, _ := filepath.Glob(pattern)
		var found, seen []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			ev := filepath.Base(filepath.Dir(filepath.Dir(f)))
			n := strings.TrimSpace(string(b))
			seen = append(seen, fmt.Sprintf("%s=%q", ev, n))
			if n == PowerButtonName {
				found = append(found, filepath.Join("/dev", "input", ev))
			}
		}
		if len(found) > 0 {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no %q input device in %s (event devices seen: %v): are the kernel modules button and evdev loaded, and does the domain have <features><acpi/></features>?", PowerButtonName, filepath.Dir(filepath.Dir(filepath.Dir(pattern))), seen)
		case <-tick.C:
		}
	}
}

// WatchPowerButtons opens the evdev devices and returns a channel that receives the
// device's path each time KEY_POWER is pressed on one of them. Reading stops when ctx
// ends. Opening fails if any device cannot be opened.
func WatchPowerButtons(ctx context.Context, devs []string) (<-chan string, error) {
	var files []*os.File
	for _, d := range devs {
		f, err := os.OpenFile(d, os.O_RDONLY, 0)
		if err != nil {
			for _, o := range files {
				o.Close()
			}
			return nil, fmt.Errorf("opening power button %s: %w", d, err)
		}
		files = append(files, f)
	}
	presses := make(chan string, len(devs))
	for i, f := range files {
		go func() {
			<-ctx.Done()
			f.Close() // unblocks the read below (evdev supports poll, so os.File uses the poller)
		}()
		go watchKeyPower(f, devs[i], presses)
	}
	return presses, nil
}

// watchKeyPower reads input events from r and sends name on presses (without blocking:
// a press while one is pending is dropped) for every KEY_POWER press (value 1). It
// returns when r fails or ends.
func watchKeyPower(r io.Reader, name string, presses chan<- string) {
	buf := make([]byte, inputEventSize*16)
	var pending []byte
	for {
		n, err := r.Read(buf)
		pending = append(pending, buf[:n]...)
		for len(pending) >= inputEventSize {
			ev := pending[:inputEventSize]
			pending = pending[inputEventSize:]
			off := inputEventSize - 8
			typ := binary.NativeEndian.Uint16(ev[off:])
			code := binary.NativeEndian.Uint16(ev[off+2:])
			value := int32(binary.NativeEndian.Uint32(ev[off+4:]))
			if typ == evKey && code == keyPower && value == 1 {
				select {
				case presses <- name:
				default:
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// StopRequest asks Supervise to stop the child: Reason is printed on the console.
type StopRequest struct {
	Reason string
}

// SuperviseOptions extend Supervise.
type SuperviseOptions struct {
	// Stop, when it yields, makes Supervise stop the child: SIGTERM to the child, then
	// after Grace SIGKILL to the child's whole process group (the child runs in its own
	// session, so its handler processes go with it).
	Stop <-chan StopRequest
	// Grace is how long the child has to exit after SIGTERM; 0 means DefaultStopGrace.
	Grace time.Duration
	// Console receives one line per step (nil: os.Stdout, the console under PID 1).
	Console io.Writer
}

// DefaultStopGrace is how long a stopped child has between SIGTERM and SIGKILL.
const DefaultStopGrace = 10 * time.Second

// WatchPowerButton finds the power button (waiting up to wait for it), watches it and
// returns a channel of stop requests, one per press, for SuperviseOptions.Stop. With no
// power button it returns the error (the caller prints it: the guest then cannot be
// shut down gracefully, only destroyed).
func WatchPowerButton(ctx context.Context, sysDir string, wait time.Duration) (<-chan StopRequest, []string, error) {
	fctx, cancel := context.WithTimeout(ctx, wait)
	devs, err := FindPowerButtons(fctx, sysDir)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	presses, err := WatchPowerButtons(ctx, devs)
	if err != nil {
		return nil, nil, err
	}
	out := make(chan StopRequest, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case dev := <-presses:
				select {
				case out <- StopRequest{Reason: fmt.Sprintf("power button pressed (%s, KEY_POWER)", dev)}:
				default:
				}
			}
		}
	}()
	return out, devs, nil
}

// stopper runs the SIGTERM → grace → SIGKILL sequence for Supervise.
type stopper struct {
	pid     int
	grace   time.Duration
	console io.Writer
	timer   *time.Timer
	killed  bool
}

// begin sends SIGTERM and starts the grace timer; a second request is only logged.
func (s *stopper) begin(req StopRequest) {
	if s.timer != nil {
		fmt.Fprintf(s.console, "paddock-agent[%d]: %s again; already stopping the agent\n", os.Getpid(), req.Reason)
		return
	}
	fmt.Fprintf(s.console, "paddock-agent[%d]: %s; stopping the agent (SIGTERM, SIGKILL after %v)\n", os.Getpid(), req.Reason, s.grace)
	if err := unix.Kill(s.pid, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		fmt.Fprintf(s.console, "paddock-agent[%d]: SIGTERM to the agent (pid %d): %v\n", os.Getpid(), s.pid, err)
	}
	s.timer = time.NewTimer(s.grace)
}

func (s *stopper) expired() <-chan time.Time {
	if s.timer == nil || s.killed {
		return nil
	}
	return s.timer.C
}

func (s *stopper) kill() {
	s.killed = true
	fmt.Fprintf(s.console, "paddock-agent[%d]: the agent did not exit within %v of SIGTERM; sending SIGKILL to its process group\n", os.Getpid(), s.grace)
	if err := unix.Kill(-s.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		_ = unix.Kill(s.pid, unix.SIGKILL)
	}
}

func (s *stopper) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
}
