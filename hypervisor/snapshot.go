package hypervisor

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Snapshotter saves a running guest's memory and device state to a file and starts new
// guests from it. *Libvirt implements it.
//
// Why QEMU migration to a file over QMP and not libvirt's virDomainSave/Restore: a
// libvirt save image can only be restored under the saved domain's own name and UUID
// ("Target domain name 'x' does not match source", then the same for the UUID: checked
// on libvirt 9.0), so at most one clone of a snapshot could run at a time. Here each
// clone is an ordinary transient domain with its own name, UUID, generation id, sockets,
// shares and disk overlay, started with QEMU's -incoming defer; the state is then fed
// to it over a file descriptor (QMP getfd + migrate-incoming "fd:", libvirt's
// virDomainQemuMonitorCommandWithFiles). "exec:" migration is not an option: libvirt
// runs QEMU with -sandbox spawn=deny, and QEMU dies when it forks.
type Snapshotter interface {
	// CreateTemplate starts spec like Create, with a virtual machine generation id
	// (<genid/>) so that clones can be handed a new one.
	CreateTemplate(ctx context.Context, spec DomainSpec) (Domain, error)
	// SaveState pauses the running domain name and writes its memory and device state
	// to path (created or truncated, mode 0600). The domain stays paused; the caller
	// destroys it. A failure leaves path incomplete: the caller removes it.
	SaveState(ctx context.Context, name, path string) error
	// Restore starts spec as a new domain from a state file SaveState wrote of a
	// template created from a spec with the same devices in the same order (names,
	// paths of sockets, shares, disks and console log may differ), with a new
	// generation id, and resumes it. On failure the half-started domain is destroyed.
	Restore(ctx context.Context, spec DomainSpec, statePath string) (Domain, error)
}

var _ Snapshotter = (*Libvirt)(nil)

// SavePoll is how often SaveState and Restore poll QEMU's migration status.
const SavePoll = 10 * time.Millisecond

// StateFormatVersion changes whenever the way this package writes or reads a state file
// changes, or the domain XML in a way a restore cannot bridge (2: guest RAM from a
// memfd under TCG); vmpool stores it in its snapshot manifest.
const StateFormatVersion = "qemu-migration-fd/2"

// CreateTemplate implements Snapshotter.
func (l *Libvirt) CreateTemplate(ctx context.Context, spec DomainSpec) (Domain, error) {
	return l.createWith(ctx, spec, func(d *libvirtxml.Domain) error {
		d.GenID = &libvirtxml.DomainGenID{}
		return nil
	})
}

// SaveState implements Snapshotter.
func (l *Libvirt) SaveState(ctx context.Context, name, path string) (err error) {
	if err := l.checkName(name); err != nil {
		return err
	}
	if path == "" {
		return fieldErr("path", "give the state file's path", "empty")
	}
	dom, err := l.lookup(name)
	if err != nil {
		return fmt.Errorf("saving state of %s: %w", name, err)
	}
	defer dom.Free()
	if st, _, err := dom.GetState(); err != nil || st != libvirt.DOMAIN_PAUSED { // paused already after a failed save
		if err := dom.Suspend(); err != nil {
			return fmt.Errorf("pausing %s to save its state: %w", name, classify(err))
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("saving state of %s: %w", name, err)
	}
	defer f.Close()
	if err := qmpPassFD(dom, f, "paddock-save"); err != nil {
		return fmt.Errorf("saving state of %s: %w", name, err)
	}
	if _, err := qmpRun(dom, `{"execute":"migrate","arguments":{"uri":"fd:paddock-save"}}`); err != nil {
		return fmt.Errorf("saving state of %s to %s: %w", name, path, err)
	}
	if err := waitMigration(ctx, dom, name); err != nil {
		return fmt.Errorf("saving state of %s to %s: %w", name, path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("saving state of %s to %s: %w", name, path, err)
	}
	l.log.Info("domain state saved", "domain", name, "path", path)
	return nil
}

// Restore implements Snapshotter.
func (l *Libvirt) Restore(ctx context.Context, spec DomainSpec, statePath string) (Domain, error) {
	f, err := os.Open(statePath)
	if err != nil {
		return Domain{}, fmt.Errorf("restoring %s: opening state file: %w", spec.Name, err)
	}
	defer f.Close()
	genid, err := newUUID()
	if err != nil {
		return Domain{}, err
	}
	d, err := l.createWith(ctx, spec, func(d *libvirtxml.Domain) error {
		// A new generation id: the guest kernel's vmgenid driver reseeds its RNG when it
		// sees it change (QEMU notifies it after loading the state).
		d.GenID = &libvirtxml.DomainGenID{Value: genid}
		d.QEMUCommandline = &libvirtxml.DomainQEMUCommandline{Args: []libvirtxml.DomainQEMUCommandlineArg{{Value: "-incoming"}, {Value: "defer"}}}
		return nil
	})
	if err != nil {
		return Domain{}, err
	}
	fail := func(err error) (Domain, error) {
		if derr := l.Destroy(context.Background(), spec.Name); derr != nil && !errors.Is(derr, ErrNotFound) {
			l.log.Warn("destroying a half-restored domain", "domain", spec.Name, "err", derr)
		}
		return Domain{}, fmt.Errorf("restoring %s from %s: %w", spec.Name, statePath, err)
	}
	dom, err := l.lookup(spec.Name)
	if err != nil {
		return fail(err)
	}
	defer dom.Free()
	if err := qmpPassFD(dom, f, "paddock-restore"); err != nil {
		return fail(err)
	}
	if _, err := qmpRun(dom, `{"execute":"migrate-incoming","arguments":{"uri":"fd:paddock-restore"}}`); err != nil {
		return fail(err)
	}
	if err := waitIncoming(ctx, dom); err != nil {
		return fail(err)
	}
	if err := dom.Resume(); err != nil {
		return fail(fmt.Errorf("resuming: %w", classify(err)))
	}
	l.log.Info("domain restored", "domain", spec.Name, "state", statePath)
	return d, nil
}

// qmpPassFD hands f to QEMU under fdname (QMP getfd with the descriptor attached).
func qmpPassFD(dom *libvirt.Domain, f *os.File, fdname string) error {
	cmd := fmt.Sprintf(`{"execute":"getfd","arguments":{"fdname":%q}}`, fdname)
	out, _, err := dom.QemuMonitorCommandWithFiles(cmd, []os.File{*f}, libvirt.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
	if err != nil {
		return fmt.Errorf("passing the state file to QEMU: %w", classify(err))
	}
	if _, err := qmpParse(out); err != nil {
		return fmt.Errorf("passing the state file to QEMU: %w", err)
	}
	return nil
}

func qmpRun(dom *libvirt.Domain, cmd string) (json.RawMessage, error) {
	out, err := dom.QemuMonitorCommand(cmd, libvirt.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", cmd, classify(err))
	}
	return qmpParse(out)
}

// qmpParse returns the "return" member of a QMP reply, or its error as a *QMPError.
func qmpParse(out string) (json.RawMessage, error) {
	var r qmpReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("QMP reply %q: %w", out, err)
	}
	if r.Error != nil {
		return nil, &QMPError{Class: r.Error.Class, Desc: r.Error.Desc}
	}
	return r.Return, nil
}

// waitMigration polls query-migrate until the outgoing migration completes or fails.
func waitMigration(ctx context.Context, dom *libvirt.Domain, name string) error {
	for {
		ret, err := qmpRun(dom, `{"execute":"query-migrate"}`)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return fmt.Errorf("query-migrate reply %s: %w", ret, err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			desc := st.ErrorDesc
			if desc == "" {
				desc = "no reason given (a full disk is the usual cause)"
			}
			return fmt.Errorf("QEMU's migration to the file %s: %s", st.Status, desc)
		}
		select {
		case <-ctx.Done():
			_, _ = qmpRun(dom, `{"execute":"migrate_cancel"}`)
			return fmt.Errorf("waiting for QEMU to write the state of %s: %w", name, ctx.Err())
		case <-time.After(SavePoll):
		}
	}
}

// waitIncoming polls query-status until QEMU has loaded the whole state (it leaves
// "inmigrate"). QEMU exits when the state does not load; the caller sees that as an
// error here.
func waitIncoming(ctx context.Context, dom *libvirt.Domain) error {
	for {
		ret, err := qmpRun(dom, `{"execute":"query-status"}`)
		if err != nil {
			return fmt.Errorf("loading the state (QEMU's log under /var/log/libvirt/qemu says why): %w", err)
		}
		var st struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return fmt.Errorf("query-status reply %s: %w", ret, err)
		}
		switch st.Status {
		case "inmigrate":
		case "paused", "running", "postmigrate":
			return nil
		default:
			return fmt.Errorf("loading the state: QEMU is %q", st.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for QEMU to load the state: %w", ctx.Err())
		case <-time.After(SavePoll):
		}
	}
}

func newUUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a generation id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}
