package hypervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
	"libvirt.org/go/libvirt"
)

// Monitor returns a QMP monitor (go-qemu's qmp.Monitor) for the running domain name,
// for what libvirt does not expose. Commands travel through libvirt's own monitor
// connection (virDomainQemuMonitorCommand), so libvirt keeps owning QEMU's QMP socket.
// Commands that change the guest behind libvirt's back taint the domain; prefer
// read-only queries. Call Connect before use and Disconnect after.
func (l *Libvirt) Monitor(name string) (qmp.Monitor, error) {
	if err := l.checkName(name); err != nil {
		return nil, err
	}
	return &libvirtMonitor{conn: l.c(), name: name}, nil
}

// QMPStatus is the answer to QMP query-status.
type QMPStatus struct {
	Running bool
	Status  string // QEMU's RunState, e.g. "running", "paused", "shutdown"
}

// QueryStatus runs QMP query-status on the domain through go-qemu's raw monitor.
func (l *Libvirt) QueryStatus(ctx context.Context, name string) (QMPStatus, error) {
	mon, err := l.Monitor(name)
	if err != nil {
		return QMPStatus{}, err
	}
	if err := ctx.Err(); err != nil {
		return QMPStatus{}, err
	}
	if err := mon.Connect(); err != nil {
		return QMPStatus{}, fmt.Errorf("QMP query-status on %s: %w", name, err)
	}
	defer mon.Disconnect()
	st, err := raw.NewMonitor(mon).QueryStatus()
	if err != nil {
		return QMPStatus{}, fmt.Errorf("QMP query-status on %s: %w", name, err)
	}
	return QMPStatus{Running: st.Running, Status: st.Status.String()}, nil
}

// libvirtMonitor implements qmp.Monitor over libvirt.org/go/libvirt's
// QemuMonitorCommand and QEMU monitor events.
type libvirtMonitor struct {
	conn *libvirt.Connect
	name string

	// mu guards the fields below.
	mu  sync.Mutex
	dom *libvirt.Domain
	ids []int // registered QEMU monitor event callbacks
}

var _ qmp.Monitor = (*libvirtMonitor)(nil)

func (m *libvirtMonitor) Connect() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dom != nil {
		return nil
	}
	dom, err := m.conn.LookupDomainByName(m.name)
	if err != nil {
		return fmt.Errorf("connecting QMP monitor of domain %s: %w", m.name, classify(err))
	}
	m.dom = dom
	return nil
}

func (m *libvirtMonitor) Disconnect() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range m.ids {
		m.conn.DomainQemuEventDeregister(id)
	}
	m.ids = nil
	if m.dom == nil {
		return nil
	}
	err := m.dom.Free()
	m.dom = nil
	return err
}

// qmpReply is QEMU's answer to a command.
type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// QMPError is an error answer from QEMU.
type QMPError struct{ Class, Desc string }

func (e *QMPError) Error() string { return "QMP error " + e.Class + ": " + e.Desc }

func (m *libvirtMonitor) Run(cmd []byte) ([]byte, error) {
	m.mu.Lock()
	dom := m.dom
	m.mu.Unlock()
	if dom == nil {
		return nil, fmt.Errorf("QMP monitor of domain %s: not connected (call Connect first)", m.name)
	}
	out, err := dom.QemuMonitorCommand(string(cmd), libvirt.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
	if err != nil {
		return nil, fmt.Errorf("QMP command on domain %s: %w", m.name, classify(err))
	}
	var r qmpReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return nil, fmt.Errorf("QMP reply from domain %s: %w", m.name, err)
	}
	if r.Error != nil {
		return nil, &QMPError{Class: r.Error.Class, Desc: r.Error.Desc}
	}
	return []byte(out), nil
}

// Events delivers the domain's QMP events (from libvirt's event loop) until ctx ends.
func (m *libvirtMonitor) Events(ctx context.Context) (<-chan qmp.Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dom == nil {
		return nil, fmt.Errorf("QMP monitor of domain %s: not connected (call Connect first)", m.name)
	}
	ch := make(chan qmp.Event, EventBuffer)
	var (
		cmu    sync.Mutex
		closed bool
	)
	// The Go binding cannot pass NULL ("any event"): match every name by regex instead.
	id, err := m.conn.DomainQemuMonitorEventRegister(m.dom, ".*", func(_ *libvirt.Connect, _ *libvirt.Domain, e *libvirt.DomainQemuMonitorEvent) {
		ev := qmp.Event{Event: e.Event}
		ev.Timestamp.Seconds, ev.Timestamp.Microseconds = e.Seconds, int64(e.Micros)
		if e.Details != "" {
			_ = json.Unmarshal([]byte(e.Details), &ev.Data)
		}
		cmu.Lock()
		defer cmu.Unlock()
		if closed {
			return
		}
		select {
		case ch <- ev:
		default: // subscriber behind: drop rather than block libvirt's event loop
		}
	}, libvirt.CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX)
	if err != nil {
		return nil, fmt.Errorf("subscribing to QMP events of domain %s: %w", m.name, classify(err))
	}
	m.ids = append(m.ids, id)
	go func() {
		<-ctx.Done()
		m.conn.DomainQemuEventDeregister(id)
		cmu.Lock()
		closed = true
		close(ch)
		cmu.Unlock()
	}()
	return ch, nil
}
