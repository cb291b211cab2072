package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddockvm/paddock/agent/pid1"
	"github.com/paddockvm/paddock/internal/buildinfo"
)

// Warm start (docs/operations.md, "Warm start"; vmpool/doc.go).
//
// A template guest is booted with CmdlineWarmKey=1 on its kernel command line. Its agent
// then starts its handlers, writes the ready line, and waits on its port for one
// identity line from the host:
//
//	PADDOCK-IDENTITY id=<guest name> seed=<64 hex digits>\n
//
// The host saves the template's memory while the agent waits, and every guest restored
// from that snapshot continues from there: its host connects to the guest's own port and
// sends the guest's own identity line. The agent mixes the seed into the kernel RNG and
// makes it reseed (pid1.Reseed; the kernel's vmgenid driver reseeds it too when the
// host gives the clone a new generation id), mounts the data shares (virtio-9p cannot be
// mounted while QEMU saves the state), draws a fresh nonce, and writes a second ready
// line naming the id it took and the nonce:
//
//	PADDOCK-AGENT READY version=<v> boot_ms=<ms> id=<guest name> nonce=<32 hex digits>\n
//
// From then on it is an ordinary agent with that id: each transport session starts
// with a session id drawn after the reseed, and it registers as itself. The host
// checks that the id in the ready line is the one it sent.

// CmdlineWarmKey on the kernel command line ("paddock.warm=1") makes the agent wait for
// an identity line after its first ready line (a snapshot template).
const CmdlineWarmKey = "paddock.warm"

// IdentityPrefix starts the identity line the host sends a warm-started guest.
const IdentityPrefix = "PADDOCK-IDENTITY"

// IdentitySeedBytes is the size of the seed in an identity line.
const IdentitySeedBytes = 32

// MaxIdentityLine bounds an identity line (bytes, newline included).
const MaxIdentityLine = 256

// Identity is what the host hands a guest restored from a snapshot.
type Identity struct {
	ID   string
	Seed []byte // IdentitySeedBytes random bytes
}

var identityRE = regexp.MustCompile(`^` + IdentityPrefix + ` id=(\S+) seed=([0-9a-f]+)$`)

// NewIdentity returns an identity for id with a fresh random seed.
func NewIdentity(id string) (Identity, error) {
	if !idRE.MatchString(id) {
		return Identity{}, fmt.Errorf("identity id %q: use letters, digits, '.', '_', ':' or '-' (at most 128), starting with a letter or digit", id)
	}
	seed := make([]byte, IdentitySeedBytes)
	if _, err := rand.Read(seed); err != nil {
		return Identity{}, fmt.Errorf("drawing an identity seed: %w", err)
	}
	return Identity{ID: id, Seed: seed}, nil
}

// Line is the identity line, newline included.
func (i Identity) Line() string {
	return fmt.Sprintf("%s id=%s seed=%s\n", IdentityPrefix, i.ID, hex.EncodeToString(i.Seed))
}

// ParseIdentity parses an identity line (with or without its newline).
func ParseIdentity(line string) (Identity, error) {
	m := identityRE.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
	if m == nil {
		return Identity{}, fmt.Errorf("not an identity line (want %q id=<name> seed=<%d hex digits>): %q", IdentityPrefix, 2*IdentitySeedBytes, line)
	}
	if !idRE.MatchString(m[1]) {
		return Identity{}, fmt.Errorf("identity line: id %q is not letters, digits, '.', '_', ':' or '-' (at most 128)", m[1])
	}
	seed, err := hex.DecodeString(m[2])
	if err != nil || len(seed) != IdentitySeedBytes {
		return Identity{}, fmt.Errorf("identity line: seed must be %d hex digits, got %d", 2*IdentitySeedBytes, len(m[2]))
	}
	return Identity{ID: m[1], Seed: seed}, nil
}

// warmBoot reports whether the kernel command line asks for a warm-start template.
func warmBoot() bool {
	b, err := os.ReadFile("/proc/cmdline")
	return err == nil && CmdlineValue(string(b), CmdlineWarmKey) == "1"
}

// identityEOFPause is how long the agent waits before reading its port again after EOF
// (a virtio port reads EOF while no host is connected: always, while the template's
// state sits in a file).
const identityEOFPause = 10 * time.Millisecond

// ReadIdentity reads r until an identity line, skipping other lines and pausing on EOF
// (no host connected yet). It reads one byte at a time so nothing after the line is
// consumed. A line longer than MaxIdentityLine, or one that starts with IdentityPrefix
// and does not parse, is an error.
func ReadIdentity(ctx context.Context, r io.Reader) (Identity, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if err := ctx.Err(); err != nil {
			return Identity{}, fmt.Errorf("waiting for the host's identity line: %w", err)
		}
		n, err := r.Read(b)
		if n == 1 {
			if b[0] != '\n' {
				if line = append(line, b[0]); len(line) > MaxIdentityLine {
					return Identity{}, fmt.Errorf("waiting for the host's identity line: a line longer than %d bytes", MaxIdentityLine)
				}
				continue
			}
			s := string(line)
			line = line[:0]
			if strings.HasPrefix(s, IdentityPrefix) {
				return ParseIdentity(s)
			}
			continue
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			time.Sleep(identityEOFPause)
		default:
			return Identity{}, fmt.Errorf("waiting for the host's identity line: %w", err)
		}
	}
}

// takeIdentity applies a host-given identity inside a restored guest: reseed the kernel
// RNG, mount the data shares, and write the second ready line with a nonce drawn after
// the reseed. The restored copy's memory work (reportRestored) waits until the agent
// has registered.
func takeIdentity(w io.Writer, id Identity) error {
	if err := pid1.Reseed(id.Seed); err != nil {
		return err
	}
	if _, err := pid1.MountShares("/sys", pid1.DataShares, os.Stdout); err != nil {
		return err
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("drawing the restore nonce: %w", err)
	}
	up, err := pid1.Uptime()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s version=%s boot_ms=%d id=%s nonce=%s\n", ReadyPrefix, buildinfo.String(), up.Milliseconds(), id.ID, hex.EncodeToString(nonce))
	return err
}

// nudgeKiB is how much memory reportRestored takes and gives back to wake the reporting.
const nudgeKiB = 32 << 10

// reportRestored turns free page reporting on in a restored copy and nudges it
// (pid1.NudgeReporting): the template ran without it (pid1.ReportingOff), and only the
// copy's reporting gives its host back the zero pages the restore read (docs/operations.md,
// "Restored guests and zero pages"). The agent runs it once it has registered, in the
// background: the nudge zeroes 32 MiB in the guest and faults it in on the host, and
// the reporting that follows keeps the guest's kernel and the host's QEMU busy, none of
// which registration should wait for. It runs on an OS thread of its own at the lowest
// priority (nice 19), which ends with it, so the agent's other goroutines come first. It
// logs one line: what it did, or that this guest has no free page reporting (no virtio
// balloon with freePageReporting, or a kernel without it), in which case it does nothing.
func reportRestored(sysDir string, log *slog.Logger) {
	runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19); err != nil {
		log.Debug("restored copy: lowering the reporting thread's priority", "err", err)
	}
	t0 := time.Now()
	was, err := pid1.SetReportingOrder(sysDir, pid1.ReportingOrder)
	switch {
	case errors.Is(err, pid1.ErrNoReporting):
		log.Info("restored copy: free page reporting not available; the pages its restore read stay with the host", "why", err)
		return
	case err != nil:
		log.Warn("restored copy: turning free page reporting on", "err", err)
		return
	}
	if err := pid1.NudgeReporting(nudgeKiB); err != nil {
		log.Warn("restored copy: free page reporting turned on but not nudged", "order_was", was, "order", pid1.ReportingOrder, "err", err)
		return
	}
	log.Info("restored copy: free page reporting turned on and nudged", "order_was", was, "order", pid1.ReportingOrder, "nudge_kib", nudgeKiB, "took", time.Since(t0).Round(time.Millisecond))
}
