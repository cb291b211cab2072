package sched

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
)

// HostProtocolVersion is the version of the host protocol (api/host/v1) this server speaks.
const HostProtocolVersion = 1

// Relay metadata keys: the host names the guest whose session a Relay stream carries.
const (
	MetaGuest = "paddock-guest"
	MetaPool  = "paddock-pool"
)

// Host states as operators see them.
const (
	hostConnected = "connected"
	hostLost      = "lost"
)

// GuestAddr is the peer address of an agent session relayed by a host: the guest's
// identity as its host attested it (host id from the host's certificate, guest and
// pool from the host's word). The agent service refuses an agent whose register names
// another id.
type GuestAddr struct {
	Host, Guest, Pool string
}

// Network returns "paddock-relay".
func (GuestAddr) Network() string { return "paddock-relay" }

func (a GuestAddr) String() string { return a.Host + "/" + a.Pool + "/" + a.Guest }

// hostRec is the server's view of one host daemon. The host registry's lock
// (hostRegistry.mu, Server.hosts.mu) guards every field.
type hostRec struct {
	id, version, accel string
	state              string
	cpus               uint32
	memory             uint64
	pools              map[string]*hostv1.Pool
	poolOrder          []string
	load               *hostv1.Load
	guests             []*hostv1.Guest
	// progress is each listed guest's CPU time and when it last rose, from the
	// host's Status messages (vouched: a silent agent's guest still runs).
	progress    map[string]guestProgress
	statsEvery  time.Duration // Register.stats_interval_ms (default 5s)
	connectedAt time.Time
	lastSeen    time.Time
	lostAt      time.Time
	link        *hostLink       // nil once lost
	caps        map[string]bool // Register.capabilities
	// cached holds the digests of the blobs the host's cache holds as far as the server
	// knows (locality.go), summaryAt when the host last sent its summary.
	cached     map[string]cachedEntry
	summaryAt  time.Time
	lastLaunch time.Time // the last dispatch of a task to one of its guests
	fetchRate  float64   // bytes/s at which it staged inputs it fetched (EWMA; 0: not measured)
}

// hostLinkBuffer is the capacity of a host link's send buffer; tests lower it, and set
// hostLinkHold (called by a link's sender before each Send) to stall the sender, to
// force an overflow.
var (
	hostLinkBuffer atomic.Int64
	hostLinkHold   atomic.Pointer[func()]
)

func init() { hostLinkBuffer.Store(8192) }

// hostLink is a host's open control stream.
type hostLink struct {
	out    chan *hostv1.ServerMessage
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func (l *hostLink) send(m *hostv1.ServerMessage) {
	select {
	case l.out <- m:
	case <-l.ctx.Done():
	default:
		l.cancel(errors.New("the host does not read its control stream fast enough (send buffer full)"))
	}
}

// hostService implements hostv1.HostServiceServer.
type hostService struct {
	hostv1.UnimplementedHostServiceServer
	s *Server
}

var _ hostv1.HostServiceServer = (*hostService)(nil)

// NewClusterServer returns a gRPC server of the host protocol on the cluster port,
// with mutual TLS from tlsCfg (it must require and verify client certificates: a
// host's id is its certificate's Common Name).
func (s *Server) NewClusterServer(tlsCfg *tls.Config) *grpc.Server {
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)), grpc.ConnectionTimeout(10*time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 10 * time.Minute, Time: time.Minute, Timeout: 20 * time.Second}),
		// Hosts ping every 30s (hostd/link): allow it, with or without a stream.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))
	hostv1.RegisterHostServiceServer(gs, &hostService{s: s})
	return gs
}

// hostID returns the Common Name of the caller's verified client certificate.
func hostID(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "the cluster port needs mutual TLS: connect with a host certificate")
	}
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 || ti.State.VerifiedChains[0][0].Subject.CommonName == "" {
		return "", status.Error(codes.Unauthenticated, "no verified client certificate with a Common Name (the host id)")
	}
	return ti.State.VerifiedChains[0][0].Subject.CommonName, nil
}

// Describe implements hostv1.HostServiceServer.
func (hs *hostService) Describe(ctx context.Context, _ *hostv1.DescribeRequest) (*hostv1.DescribeResponse, error) {
	id, err := hostID(ctx)
	if err != nil {
		return nil, err
	}
	return &hostv1.DescribeResponse{ServerVersion: hs.s.cfg.Version, ProtocolVersion: HostProtocolVersion, HostId: id}, nil
}

// Control implements hostv1.HostServiceServer.
func (hs *hostService) Control(stream hostv1.HostService_ControlServer) error {
	s := hs.s
	id, err := hostID(stream.Context())
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	switch {
	case reg == nil:
		return status.Error(codes.InvalidArgument, "the first message of a control stream must be a register")
	case reg.GetHostId() != id:
		return status.Errorf(codes.PermissionDenied, "register: host_id %q is not the host id of your certificate (%q): set host.id to %q or use that host's certificate", reg.GetHostId(), id, id)
	case reg.GetProtocolVersion() != HostProtocolVersion:
		return status.Errorf(codes.InvalidArgument, "register: protocol_version %d: this server speaks %d", reg.GetProtocolVersion(), HostProtocolVersion)
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	link := &hostLink{out: make(chan *hostv1.ServerMessage, hostLinkBuffer.Load()), ctx: ctx, cancel: cancel}
	log := s.log.With("host", id)
	h := s.hosts.register(id, reg, link, time.Now())
	log.Info("host registered", "version", reg.GetVersion(), "accel", reg.GetAccel(), "cpus", reg.GetCapacity().GetCpus(), "pools", len(reg.GetPools()), "capabilities", reg.GetCapabilities())
	defer func() {
		if s.hosts.disconnect(h, link, time.Now()) {
			log.Warn("host lost", "err", context.Cause(ctx))
		}
	}()
	interval := 2 * time.Second
	if err := stream.Send(&hostv1.ServerMessage{Msg: &hostv1.ServerMessage_Registered{Registered: &hostv1.Registered{
		ServerVersion: s.cfg.Version, StatusIntervalMs: interval.Milliseconds()}}}); err != nil {
		return err
	}
	if err := s.sendTaskSnapshot(ctx, h, link); err != nil {
		log.Error("resyncing the host's tasks (TaskSnapshot); closing its stream so it registers again", "err", err)
		return status.Errorf(codes.Unavailable, "building the task snapshot: %v", err)
	}
	if b := s.hosts.lastBacklog(h); b != nil {
		link.send(&hostv1.ServerMessage{Msg: &hostv1.ServerMessage_Backlog{Backlog: b}})
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-link.out:
				if hold := hostLinkHold.Load(); hold != nil {
					(*hold)()
				}
				if err := stream.Send(m); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				cancel(err)
				return
			}
			if err := s.handleHostMessage(ctx, h, m, log); err != nil {
				cancel(err)
				return
			}
		}
	}()
	<-ctx.Done()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
		return status.Error(codes.Aborted, err.Error())
	}
	return nil
}

// setPools records the host's pools. Caller holds hostRegistry.mu.
func (h *hostRec) setPools(ps []*hostv1.Pool) {
	if len(ps) == 0 {
		return
	}
	h.pools = map[string]*hostv1.Pool{}
	h.poolOrder = h.poolOrder[:0]
	for _, p := range ps {
		h.pools[p.GetName()] = p
		h.poolOrder = append(h.poolOrder, p.GetName())
	}
}

func (s *Server) handleHostMessage(ctx context.Context, h *hostRec, m *hostv1.HostMessage, log *slog.Logger) error {
	switch m := m.GetMsg().(type) {
	case *hostv1.HostMessage_Status:
		s.hosts.status(h, m.Status, time.Now())
	case *hostv1.HostMessage_GuestGone:
		s.GuestGone(ctx, h.id, m.GuestGone.GetName(), m.GuestGone.GetReason())
	case *hostv1.HostMessage_Collected:
		s.collected(h.id, m.Collected)
	case *hostv1.HostMessage_Staged:
		s.staged(h.id, m.Staged)
	case *hostv1.HostMessage_Register:
		return errors.New("register sent twice on one control stream")
	default:
		return fmt.Errorf("unknown host message %T", m)
	}
	return nil
}

// GuestGone handles a host's report that one of its guests went away: the guest's
// agent session is closed and every task leased to it is requeued now (its attempt
// ends with an error naming the guest), not at lease expiry. A guest of another host
// is left alone.
func (s *Server) GuestGone(ctx context.Context, host, guest, reason string) {
	log := s.log.With("host", host, "guest", guest)
	s.agents.mu.Lock()
	a := s.agents.byID[guest]
	if a == nil || a.hostID != host {
		s.agents.mu.Unlock()
		log.Info("guest gone (its agent never registered)", "reason", reason)
		return
	}
	if a.sess != nil {
		a.sess.close(errors.New("its host reported the guest gone: " + reason))
	}
	a.gone = true
	a.reindex()
	s.agents.mu.Unlock()
	live, err := s.st.Live(ctx)
	if err != nil {
		log.Error("guest gone: listing its tasks", "err", err)
		return
	}
	n := 0
	now := time.Now()
	for _, t := range live {
		if t.AgentID != guest {
			continue
		}
		u, err := store.Transition(t, store.EvExpire, store.Change{Now: now, FailureKind: store.GuestGone,
			Error: fmt.Sprintf("guest %s on host %s gone (%s) while it held lease %d", guest, host, reason, t.LeaseID)})
		if err != nil {
			continue
		}
		nt, err := s.st.Update(ctx, u)
		if err != nil {
			continue // reported or expired meanwhile
		}
		n++
		s.agents.mu.Lock()
		a.release(t.ID, t.LeaseID)
		s.agents.mu.Unlock()
		s.metrics.guestRequeues.Inc()
		s.finished(nt)
	}
	log.Info("guest gone; its tasks requeued", "reason", reason, "requeued", n)
	s.wakeAll()
}

// sendTaskSnapshot queues the TaskSnapshot of host h on link (already h's link, so
// every TaskEvent from now on goes to it too): each lease a guest of h holds, with the
// inputs to stage where the host stages them, and each guest's assigned count. The
// inputs are read from the store first, without s.agents.mu; the snapshot itself is
// built from the agents' leases and queued under one hold of s.agents.mu (the lock
// under which every TaskEvent is queued), so no TaskEvent can fall between what it
// describes and its place in the stream. A lease granted meanwhile
// whose inputs were not read has had its own KIND_STARTED queued already (with them).
func (s *Server) sendTaskSnapshot(ctx context.Context, h *hostRec, link *hostLink) error {
	type key struct {
		task  string
		lease uint64
	}
	var need []key
	s.agents.mu.Lock()
	for _, a := range s.agents.byID {
		if a.hostID != h.id || s.dataPath(a) != agentv1.DataPath_DATA_PATH_SHARED {
			continue
		}
		for _, as := range a.running {
			if as.leaseID != 0 {
				need = append(need, key{as.taskID, as.leaseID})
			}
		}
	}
	s.agents.mu.Unlock()
	tasks := map[key]store.Task{}
	for _, k := range need {
		t, err := s.st.Get(ctx, k.task)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reading task %s: %w", k.task, err)
		}
		if t.LeaseID == k.lease {
			tasks[k] = t
		}
	}
	snap := &hostv1.TaskSnapshot{Assigned: map[string]uint32{}}
	s.agents.mu.Lock()
	defer s.agents.mu.Unlock()
	for _, a := range s.agents.byID {
		if a.hostID != h.id {
			continue
		}
		if a.assigned > 0 {
			snap.Assigned[a.id] = uint32(a.assigned)
		}
		for _, as := range a.running {
			if as.leaseID == 0 {
				continue // reserved, not yet leased: its KIND_STARTED follows
			}
			t := tasks[key{as.taskID, as.leaseID}]
			snap.Running = append(snap.Running, &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: a.id, TaskId: as.taskID, LeaseId: as.leaseID,
				Inputs: hostRefs(t.InputBlobs), Tenant: t.Tenant, TaskClass: string(t.Class)})
		}
	}
	sort.Slice(snap.Running, func(i, j int) bool {
		x, y := snap.Running[i], snap.Running[j]
		if x.GetGuest() != y.GetGuest() {
			return x.GetGuest() < y.GetGuest()
		}
		return x.GetTaskId() < y.GetTaskId()
	})
	// Queued under s.agents.mu, as every TaskEvent is; not queued if h was replaced
	// meanwhile (the new stream sends its own).
	s.hosts.sendOn(h, link, &hostv1.ServerMessage{Msg: &hostv1.ServerMessage_TaskSnapshot{TaskSnapshot: snap}})
	return nil
}

// guestTaskEvent tells a guest's host that lease leaseID of a task started or ended on
// it; inputs (KIND_STARTED under DATA_PATH_SHARED) are to be staged. Caller holds
// s.agents.mu.
func (s *Server) guestTaskEvent(a *agent, taskID string, leaseID uint64, kind hostv1.TaskEvent_Kind, inputs map[string]store.BlobRef) {
	s.sendTaskEvent(a, &hostv1.TaskEvent{Kind: kind, Guest: a.id, TaskId: taskID, LeaseId: leaseID, Inputs: hostRefs(inputs)})
}

// guestTaskStarted is guestTaskEvent's KIND_STARTED of leased task t, with the task's
// tenant and class (the bandwidth class of its input fetches). Caller holds s.agents.mu.
func (s *Server) guestTaskStarted(a *agent, t *store.Task, inputs map[string]store.BlobRef) {
	s.sendTaskEvent(a, &hostv1.TaskEvent{Kind: hostv1.TaskEvent_KIND_STARTED, Guest: a.id, TaskId: t.ID, LeaseId: t.LeaseID,
		Inputs: hostRefs(inputs), Tenant: t.Tenant, TaskClass: string(t.Class)})
}

// sendTaskEvent sends e to agent a's host, if it is connected. Caller holds s.agents.mu.
func (s *Server) sendTaskEvent(a *agent, e *hostv1.TaskEvent) {
	if a.hostID == "" {
		return
	}
	s.hosts.send(a.hostID, &hostv1.ServerMessage{Msg: &hostv1.ServerMessage_TaskEvent{TaskEvent: e}})
}

// backlogLoop sends every connected host the queued tasks by type whenever they change,
// and at least every 5s.
func (s *Server) backlogLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var last map[string]int64
	var sentAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.hosts.anyLinked() {
			continue
		}
		counts, err := s.st.Counts(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("counting the backlog for hosts", "err", err)
			}
			continue
		}
		cur := map[string]int64{}
		for _, c := range counts {
			if c.State == store.Queued && c.N > 0 {
				cur[c.Type] += c.N
			}
		}
		s.hosts.setBacklog(cur)
		if maps.Equal(cur, last) && time.Since(sentAt) < 5*time.Second {
			continue
		}
		last, sentAt = cur, time.Now()
		s.hosts.sendBacklog(cur)
	}
}

// MaxBacklogTypes bounds the task types of one Backlog message (the most queued first).
const MaxBacklogTypes = 1024

// backlogOf returns the part of the queued counts by type that h's pools serve, at
// most MaxBacklogTypes types (those with the most tasks queued). Clients choose type
// names freely: a host hears only of its own. Caller holds hostRegistry.mu.
func (h *hostRec) backlogOf(queued map[string]int64) *hostv1.Backlog {
	out := map[string]int64{}
	for _, p := range h.pools {
		for _, typ := range p.GetTaskTypes() {
			if n, ok := queued[typ]; ok {
				out[typ] = n
			}
		}
	}
	if len(out) > MaxBacklogTypes {
		types := make([]string, 0, len(out))
		for typ := range out {
			types = append(types, typ)
		}
		sort.Slice(types, func(i, j int) bool {
			if out[types[i]] != out[types[j]] {
				return out[types[i]] > out[types[j]]
			}
			return types[i] < types[j]
		})
		for _, typ := range types[MaxBacklogTypes:] {
			delete(out, typ)
		}
	}
	return &hostv1.Backlog{Queued: out}
}

// Relay implements hostv1.HostServiceServer: the stream becomes a connection of the
// agent service whose peer address is the attested GuestAddr.
func (hs *hostService) Relay(stream hostv1.HostService_RelayServer) error {
	s := hs.s
	id, err := hostID(stream.Context())
	if err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	one := func(k string) string {
		if v := md.Get(k); len(v) == 1 {
			return v[0]
		}
		return ""
	}
	addr := GuestAddr{Host: id, Guest: one(MetaGuest), Pool: one(MetaPool)}
	if addr.Guest == "" {
		return status.Errorf(codes.InvalidArgument, "relay: metadata %q (the guest's name) is missing", MetaGuest)
	}
	if !s.hosts.linked(id) {
		return status.Errorf(codes.FailedPrecondition, "relay: host %s has no control stream: open Control and register first", id)
	}
	inner, outer := net.Pipe()
	conn := &relayConn{Conn: inner, remote: addr}
	if err := s.relayLis.put(stream.Context(), conn); err != nil {
		inner.Close()
		outer.Close()
		return status.Error(codes.Unavailable, "relay: the server is shutting down")
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() { // guest → agent service
		defer outer.Close()
		for {
			c, err := stream.Recv()
			if err != nil {
				return
			}
			if _, err := outer.Write(c.GetData()); err != nil {
				return
			}
		}
	}()
	go func() {
		<-ctx.Done()
		outer.Close()
	}()
	buf := make([]byte, 32<<10)
	for { // agent service → guest
		n, err := outer.Read(buf)
		if n > 0 {
			if serr := stream.Send(&hostv1.Chunk{Data: append([]byte(nil), buf[:n]...)}); serr != nil {
				return nil
			}
		}
		if err != nil {
			return nil
		}
	}
}

// relayConn is one relayed agent session as the agent service sees it.
type relayConn struct {
	net.Conn
	remote GuestAddr
}

func (c *relayConn) RemoteAddr() net.Addr { return c.remote }

// chanListener is a net.Listener fed by Relay streams.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) put(ctx context.Context, c net.Conn) error {
	select {
	case l.conns <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return GuestAddr{Host: "relay"} }

// HostInfo is what operators see of one host.
type HostInfo struct {
	ID, State, Version, Accel string
	CPUs                      uint32
	MemoryBytes               uint64
	Load                      *hostv1.Load
	Pools                     []*hostv1.Pool
	Guests                    int
	ConnectedAt, LastSeen     time.Time
}

// Hosts returns the hosts the server knows, sorted by id.
func (s *Server) Hosts() []HostInfo { return s.hosts.list() }

// VMInfo is one guest as its host last reported it, with its agent's state.
type VMInfo struct {
	Host       string
	Guest      *hostv1.Guest
	AgentState string // connected, lost, or "" (never registered)
	// AgentLoad is the load its agent last reported (memory included); nil if none.
	AgentLoad *agentv1.Load
}

// VMs returns the guests of every host (only host's when it is not empty), sorted by
// host, pool and name.
func (s *Server) VMs(host string) []VMInfo {
	out := s.hosts.guests(host)
	s.agents.mu.Lock()
	for i, vi := range out {
		if a := s.agents.byID[vi.Guest.GetName()]; a != nil && a.hostID == vi.Host {
			out[i].AgentState, out[i].AgentLoad = a.state, a.load
		}
	}
	s.agents.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Guest.GetPool() != b.Guest.GetPool() {
			return a.Guest.GetPool() < b.Guest.GetPool()
		}
		return a.Guest.GetName() < b.Guest.GetName()
	})
	return out
}

// ListHosts implements paddockv1connect.ClusterServiceHandler.
func (api *clientAPI) ListHosts(ctx context.Context, _ *connect.Request[paddockv1.ListHostsRequest]) (*connect.Response[paddockv1.ListHostsResponse], error) {
	if err := admin(ctx, "listing hosts (paddock host ls)"); err != nil {
		return nil, err
	}
	out := &paddockv1.ListHostsResponse{}
	for _, h := range api.s.Hosts() {
		ph := &paddockv1.Host{Id: h.ID, State: h.State, Version: h.Version, Accel: h.Accel, Cpus: h.CPUs, MemoryBytes: h.MemoryBytes,
			Guests: int32(h.Guests), ConnectedAtUnixMs: unixMS(h.ConnectedAt), LastSeenUnixMs: unixMS(h.LastSeen), Replica: api.s.cfg.ReplicaID}
		if l := h.Load; l != nil {
			ph.CpuPercent, ph.MemAvailableBytes, ph.NicBytesPerSec = l.GetCpuPercent(), l.GetMemAvailableBytes(), l.GetNicRxBytesPerSec()+l.GetNicTxBytesPerSec()
			ph.TransferBytesPerSec, ph.TransferCapacityBytesPerSec = l.GetTransferBytesPerSec(), l.GetTransferCapacityBytesPerSec()
		}
		for _, p := range h.Pools {
			ph.Pools = append(ph.Pools, &paddockv1.HostPool{Name: p.GetName(), State: p.GetState(), Error: p.GetError(), TaskTypes: p.GetTaskTypes(),
				MinIdle: p.GetMinIdle(), Max: p.GetMax(), Blocked: p.GetBlocked()})
		}
		out.Hosts = append(out.Hosts, ph)
	}
	return connect.NewResponse(out), nil
}

// ListVMs implements paddockv1connect.ClusterServiceHandler.
func (api *clientAPI) ListVMs(ctx context.Context, req *connect.Request[paddockv1.ListVMsRequest]) (*connect.Response[paddockv1.ListVMsResponse], error) {
	if err := admin(ctx, "listing guests (paddock vm ls)"); err != nil {
		return nil, err
	}
	out := &paddockv1.ListVMsResponse{}
	now := time.Now().UnixMilli()
	for _, v := range api.s.VMs(req.Msg.GetHost()) {
		g := v.Guest
		vm := &paddockv1.VM{Name: g.GetName(), Host: v.Host, Pool: g.GetPool(), State: g.GetState(), TasksRun: g.GetTasksRun(), Running: g.GetRunning(),
			CpuPercent: g.GetCpuPercent(), MemoryBytes: g.GetMemoryBytes(), Agent: v.AgentState, BootMs: g.GetBootMs(), RssBytes: g.GetRssBytes(),
			AgentRssBytes: v.AgentLoad.GetAgentRssBytes(), HandlersRssBytes: v.AgentLoad.GetHandlersRssBytes(), HandlersUp: v.AgentLoad.GetHandlersUp(),
			AgentAnonBytes: v.AgentLoad.GetAgentAnonBytes()}
		if c := g.GetCreatedAtUnixMs(); c > 0 {
			vm.UptimeMs = max(now-c, 0)
		}
		out.Vms = append(out.Vms, vm)
	}
	return connect.NewResponse(out), nil
}
