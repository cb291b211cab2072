package hostd_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/vmpool"
)

// tcpProxy forwards TCP connections to a target until cut: then it closes every
// connection it carries and refuses new ones until restored.
type tcpProxy struct {
	l      net.Listener
	target string

	mu    sync.Mutex // guards the fields below
	cutOn bool
	conns map[net.Conn]bool
}

func startProxy(t testing.TB, target string) *tcpProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cutOn := p.cutOn
		p.mu.Unlock()
		if cutOn {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close(); c.Close() }()
		go func() { io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// cut closes every carried connection and refuses new ones.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOn = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	p.cutOn = false
	p.mu.Unlock()
}

// TestResyncAfterLinkLoss: a guest runs a long task (so its host marks it busy); the
// host's link with the server is cut; meanwhile the task's lease expires (its one
// attempt: it fails), and the server's KIND_FINISHED for it has no stream to go to, so
// the host still holds the guest busy. When the link comes back the server's
// TaskSnapshot (no leases) makes the host mark the guest idle again.
func TestResyncAfterLinkLoss(t *testing.T) {
	pool := "rl" + randHex(2)
	// A long boot_timeout: under TCG on a loaded 2-core machine a boot has taken over 3 minutes.
	e := startWith(t, options{proxy: true, pools: []vmpool.PoolConfig{{Name: pool, VCPUs: 1, MemoryMiB: 256, MinIdle: 1, Max: 1, IdleTimeout: 10 * time.Minute,
		TaskTypes: []string{"test.sleep"}, BootTimeout: 8 * time.Minute}}})
	e.waitFor("a registered guest", 2*bootWait+time.Minute, func() bool { return len(e.registered(pool)) == 1 })
	guest := e.registered(pool)[0]
	r, err := e.tasks.Submit(context.Background(), connect.NewRequest(&paddockv1.SubmitRequest{Task: &paddockv1.TaskSpec{Type: "test.sleep", Payload: []byte("30m"), MaxAttempts: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	id := r.Msg.GetTask().GetId()
	busy := func() bool {
		for _, g := range e.guests(pool) {
			if g.Name == guest {
				return g.State == vmpool.StateBusy && g.Running == 1
			}
		}
		return false
	}
	e.waitFor("the guest busy with the task", 2*time.Minute, busy)

	e.proxy.cut()
	got := e.wait(id, 3*time.Minute) // its lease (30s) expires: the agent cannot renew it
	if got.GetState() == paddockv1.State_STATE_SUCCEEDED || !strings.Contains(got.String(), "expired") {
		t.Fatalf("task after its lease could not be renewed: %v", got)
	}
	if up, _ := e.d.Connected(); up {
		t.Fatal("the daemon is connected through a cut proxy")
	}
	if !busy() {
		t.Fatalf("the guest is not busy while the link is down: %+v (the lost KIND_FINISHED was not lost?)", e.guests(pool))
	}

	e.proxy.restore()
	e.waitFor("the daemon connected again", 2*time.Minute, func() bool { up, _ := e.d.Connected(); return up })
	e.waitFor("the guest idle after the resync", time.Minute, func() bool {
		for _, g := range e.guests(pool) {
			if g.Name == guest {
				return g.State == vmpool.StateIdle && g.Running == 0
			}
		}
		return false
	})
	if !strings.Contains(e.logs.String(), "guest state resynced with the server") {
		t.Errorf("no log line of the resync")
	}
}
