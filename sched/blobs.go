package sched

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
	"github.com/paddockvm/paddock/api/guestabi"
	hostv1 "github.com/paddockvm/paddock/api/host/v1"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

// The data plane's limits.
const (
	// BlobChunkSize is the largest data message of the blob RPCs.
	BlobChunkSize = 256 << 10
	// MaxInputBlobs bounds the input blobs of one task.
	MaxInputBlobs = 1024
	// CollectTimeout is the longest the server waits for a host's Collected.
	CollectTimeout = 10 * time.Minute
	// CapStage is the host capability of staging inputs into guests and collecting
	// their outputs (Register.capabilities).
	CapStage = "stage"
)

// errNoBlobs is the error of every blob feature on a server without a blob store.
var errNoBlobs = errors.New("this server has no blob store: configure server.blob_store (fs or s3) to use input and output blobs")

// blobCode maps an error of the blob store to a gRPC code.
func blobCode(err error) codes.Code {
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, blob.ErrMismatch), errors.Is(err, blob.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, blob.ErrTooLarge):
		return codes.ResourceExhausted
	case errors.Is(err, blob.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Internal
}

func blobStatus(err error) error { return status.Error(blobCode(err), err.Error()) }

// checkInputBlobs validates the input blobs of a submitted task against the blob store
// and fills in t.InputBlobs with their sizes. Names follow guestabi.ValidName and are
// shared with the inline inputs.
func (s *Server) checkInputBlobs(ctx context.Context, sp *paddockv1.TaskSpec, t *store.Task) error {
	in := sp.GetInputBlobs()
	if len(in) == 0 {
		return nil
	}
	if s.cfg.Blobs == nil {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("task.input_blobs: %w", errNoBlobs))
	}
	if len(in) > MaxInputBlobs {
		return invalid("task.input_blobs: %d blobs is over the limit of %d a task: pack them into fewer files", len(in), MaxInputBlobs)
	}
	names := make([]string, 0, len(in))
	for name := range in {
		names = append(names, name)
	}
	sort.Strings(names)
	// Refresh the inputs' retention clocks before checking they exist: retention cannot
	// delete one between the check and the task being stored.
	var digests []string
	for _, name := range names {
		if d, err := blob.ParseDigest(in[name].GetDigest()); err == nil {
			digests = append(digests, string(d))
		}
	}
	if err := s.touchBlobs(ctx, digests...); err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("task.input_blobs: %w (nothing stored; submit again)", err))
	}
	t.InputBlobs = make(map[string]store.BlobRef, len(in))
	for _, name := range names {
		ref := in[name]
		switch {
		case !guestabi.ValidName(name):
			return invalid("task.input_blobs: name %.140q is not a valid input name: use %s", name, guestabi.NameRule)
		case hasInput(t.Inputs, name):
			return invalid("task.input_blobs[%q]: the name is also an inline input (task.inputs): inline and blob inputs share one namespace; rename one", name)
		case ref.GetSize() < 0:
			return invalid("task.input_blobs[%q].size: %d is negative: give the blob's size, or 0 to let the server fill it in", name, ref.GetSize())
		}
		d, err := blob.ParseDigest(ref.GetDigest())
		if err != nil {
			return invalid("task.input_blobs[%q].digest: %v", name, err)
		}
		info, err := s.cfg.Blobs.Stat(ctx, d)
		switch {
		case errors.Is(err, blob.ErrNotFound):
			return invalid("task.input_blobs[%q]: blob %s is not in the server's blob store: upload it first: paddock blob put FILE (or PUT %s/%s)", name, d, blobhttp.Prefix, d)
		case err != nil:
			return connect.NewError(connect.CodeUnavailable, fmt.Errorf("task.input_blobs[%q]: checking blob %s in the blob store %s: %w (nothing stored; submit again)", name, d, s.cfg.Blobs, err))
		case !s.mayRead(ctx, d, t.Tenant):
			return invalid("task.input_blobs[%q]: blob %s is not in the server's blob store: upload it first: paddock blob put FILE (or PUT %s/%s)", name, d, blobhttp.Prefix, d)
		case ref.GetSize() != 0 && ref.GetSize() != info.Size:
			return invalid("task.input_blobs[%q]: blob %s has %d bytes, not the %d given: give its right size, or 0", name, d, info.Size, ref.GetSize())
		}
		t.InputBlobs[name] = store.BlobRef{Digest: string(d), Size: info.Size}
	}
	return nil
}

// mayRead reports whether the caller in ctx, submitting for tenant tn, may name blob d:
// an admin may name any blob; a tenant, one it uploaded or one its own tasks name
// (store.BlobGrants). A blob it may not read is refused as if it were not stored.
func (s *Server) mayRead(ctx context.Context, d blob.Digest, tn string) bool {
	if caller(ctx).Admin {
		return true
	}
	ok, err := s.st.BlobGranted(ctx, string(d), tn)
	if err != nil {
		s.log.Warn("checking a tenant's access to a blob", "blob", d, "tenant", tn, "err", err)
	}
	return ok && err == nil
}

// constantTimeEqual compares secrets in time that depends on neither (their SHA-256
// digests are compared, so not even on their lengths).
func constantTimeEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// blobHandler is the /v1/blobs API on the client port, behind the client token.
func (s *Server) blobHandler() http.Handler {
	if s.cfg.Blobs == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := s.authenticate(r.Context(), r.Header.Get("Authorization")); err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotImplemented)
			fmt.Fprintf(w, "{\"error\":%q,\"code\":%q}\n", errNoBlobs.Error(), blobhttp.CodeUnavailable)
		})
	}
	cs := &countingStore{Store: s.cfg.Blobs, m: s.metrics, port: "client", touch: s.touchBlobs, grants: s.st, quota: newBlobQuota(s.st, s.cfg.Tenants)}
	bh := blobhttp.NewHandler(cs, blobhttp.Options{
		Authorize: func(r *http.Request) error {
			if _, ok := tenant.From(r.Context()); ok {
				return nil // authenticated below
			}
			_, err := s.authenticate(r.Context(), r.Header.Get("Authorization"))
			return err
		},
		MaxBlobBytes: s.cfg.MaxBlobBytes,
		Logger:       s.log,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			bh.ServeHTTP(w, r) // its Authorize answers 401 the API's way
			return
		}
		rest, _ := strings.CutPrefix(r.URL.Path, blobhttp.Prefix)
		if !p.Admin && (r.Method == http.MethodDelete || rest == "" || rest == "/") {
			// Blobs are shared by the tenants that hold them: deleting one, or listing
			// the whole store, is an operator's act.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			what := "listing the blob store"
			if r.Method == http.MethodDelete {
				what = "deleting a blob"
			}
			fmt.Fprintf(w, "{\"error\":%q,\"code\":%q}\n", what+" needs an admin token (tenant "+p.Tenant+"'s token is not one): unused blobs are deleted by retention (server.blob_retention)", blobhttp.CodeUnauthorized)
			return
		}
		bh.ServeHTTP(w, r.WithContext(tenant.With(r.Context(), p)))
	})
}

// countingStore counts the bytes that go into and out of a store. With touch set (the
// client port), a Stat (HEAD, or a PUT of a blob that exists) or Put first refreshes
// the blob's retention clock: a client told a blob exists skips the upload and may
// name it in a submit within the retention.
//
// With grants set (the client port), a caller that is not an admin sees only the blobs
// its tenant may read (store.BlobGrants): any other answers exactly as a blob that is
// not stored, so that a digest tells nothing of another tenant's data. Its upload of a
// blob already stored is read and checked against the digest all the same (the store
// would skip it), and only then granted: knowing a digest is not holding the data.
// Such an upload counts against the tenant's tenants.<name>.max_blob_bytes (quota).
type countingStore struct {
	blob.Store
	m      *metrics
	port   string
	touch  func(ctx context.Context, digests ...string) error
	grants store.BlobGrants
	quota  *blobQuota
}

// hidden reports whether the caller in ctx may not read blob d (op names the request in
// the not-found error), with that error.
func (c *countingStore) hidden(ctx context.Context, op string, d blob.Digest) error {
	if c.grants == nil {
		return nil
	}
	p := caller(ctx)
	if p.Admin {
		return nil
	}
	ok, err := c.grants.BlobGranted(ctx, string(d), p.Tenant)
	if err != nil {
		return fmt.Errorf("%w: %v", blob.ErrUnavailable, err)
	}
	if !ok {
		return fmt.Errorf("%w: %s: blob %s is not in %s", blob.ErrNotFound, op, d, c.Store)
	}
	return nil
}

func (c *countingStore) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	if c.touch != nil {
		if err := c.touch(ctx, string(d)); err != nil {
			return blob.Info{}, fmt.Errorf("%w: %v", blob.ErrUnavailable, err)
		}
	}
	if err := c.hidden(ctx, "stat", d); err != nil {
		return blob.Info{}, err
	}
	return c.Store.Stat(ctx, d)
}

func (c *countingStore) Open(ctx context.Context, d blob.Digest, offset int64) (io.ReadCloser, error) {
	if err := c.hidden(ctx, "open", d); err != nil {
		return nil, err
	}
	rc, err := c.Store.Open(ctx, d, offset)
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, add: c.m.blobBytes.WithLabelValues(c.port, "out").Add}, nil
}

func (c *countingStore) Put(ctx context.Context, d blob.Digest, size int64, r io.Reader) (blob.Info, error) {
	if c.touch != nil {
		if err := c.touch(ctx, string(d)); err != nil {
			return blob.Info{}, fmt.Errorf("%w: %v", blob.ErrUnavailable, err)
		}
	}
	body := &countingReader{ReadCloser: io.NopCloser(r), add: c.m.blobBytes.WithLabelValues(c.port, "in").Add}
	if c.hidden(ctx, "put", d) == nil {
		return c.Store.Put(ctx, d, size, body)
	}
	// A tenant that may not read d yet: hash what it sends, whether the store reads it
	// (a new blob) or not (one already stored), and grant d only if it is d. The
	// grant counts against the tenant's max_blob_bytes: hold the size while uploading.
	p := caller(ctx)
	var in io.Reader = body
	if c.quota != nil {
		most, release, err := c.quota.take(ctx, p.Tenant, size)
		if err != nil {
			return blob.Info{}, err
		}
		defer release()
		if most >= 0 {
			in = &quotaReader{r: body, left: most, overflow: func() error { return c.quota.overLeft(p.Tenant, most) }}
		}
	}
	h := blob.NewHasher()
	info, err := c.Store.Put(ctx, d, size, io.TeeReader(in, h))
	if err != nil {
		return info, err
	}
	if _, err := io.Copy(h, in); err != nil {
		return blob.Info{}, fmt.Errorf("reading the upload of blob %s: %w", d, err)
	}
	if err := h.Verify(d, info.Size); err != nil {
		return blob.Info{}, err
	}
	if err := c.grants.GrantBlob(ctx, string(d), p.Tenant, info.Size, time.Now()); err != nil {
		return blob.Info{}, fmt.Errorf("%w: %v", blob.ErrUnavailable, err)
	}
	return info, nil
}

// Delete deletes blob d (an admin's DELETE) and the grants that count it against its
// uploaders' max_blob_bytes.
func (c *countingStore) Delete(ctx context.Context, d blob.Digest) error {
	if err := c.Store.Delete(ctx, d); err != nil {
		return err
	}
	if c.grants != nil {
		if err := c.grants.DropBlobGrants(ctx, string(d)); err != nil {
			return fmt.Errorf("%w: blob %s deleted, its grants not: %v", blob.ErrUnavailable, d, err)
		}
	}
	return nil
}

type countingReader struct {
	io.ReadCloser
	add func(float64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.add(float64(n))
	}
	return n, err
}

// sendBlob streams blob d from offset in chunks of at most BlobChunkSize.
func (s *Server) sendBlob(ctx context.Context, port string, d blob.Digest, offset int64, send func([]byte) error) error {
	if offset < 0 {
		return status.Errorf(codes.InvalidArgument, "offset %d is negative", offset)
	}
	st := &countingStore{Store: s.cfg.Blobs, m: s.metrics, port: port}
	rc, err := st.Open(ctx, d, offset)
	if err != nil {
		return blobStatus(fmt.Errorf("opening blob %s at offset %d: %w", d, offset, err))
	}
	defer rc.Close()
	buf := make([]byte, BlobChunkSize)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			if serr := send(buf[:n]); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return blobStatus(fmt.Errorf("reading blob %s: %w", d, err))
		}
	}
}

// streamReader reads the data messages of a client stream; first is the data of the
// header message.
type streamReader struct {
	buf  []byte
	recv func() ([]byte, error)
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		b, err := r.recv()
		if err != nil {
			return 0, err // io.EOF at the stream's end
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// writeMsg is a WriteBlob request of either protocol.
type writeMsg[H any] interface {
	GetHeader() H
	GetData() []byte
}

// dataOf returns the data of the next message of a WriteBlob stream after the header.
func dataOf[H comparable, M writeMsg[H]](recv func() (M, error)) func() ([]byte, error) {
	return func() ([]byte, error) {
		m, err := recv()
		if err != nil {
			return nil, err
		}
		var none H
		if m.GetHeader() != none {
			return nil, status.Error(codes.InvalidArgument, "header sent twice in one WriteBlob")
		}
		return m.GetData(), nil
	}
}

// receiveBlob stores the blob d of size bytes that the rest of a client stream carries.
func (s *Server) receiveBlob(ctx context.Context, port string, d blob.Digest, size int64, first []byte, recv func() ([]byte, error)) (blob.Info, error) {
	if size < 0 {
		return blob.Info{}, status.Errorf(codes.InvalidArgument, "header: size %d is negative: give the blob's size", size)
	}
	if s.cfg.MaxBlobBytes > 0 && size > s.cfg.MaxBlobBytes {
		return blob.Info{}, status.Errorf(codes.ResourceExhausted, "blob %s of %d bytes is over the server's limit of %d bytes a blob", d, size, s.cfg.MaxBlobBytes)
	}
	st := &countingStore{Store: s.cfg.Blobs, m: s.metrics, port: port}
	info, err := st.Put(ctx, d, size, &streamReader{buf: first, recv: recv})
	if err != nil {
		return blob.Info{}, blobStatus(fmt.Errorf("storing blob %s: %w", d, err))
	}
	return info, nil
}

// --- the agent port: DATA_PATH_STREAM agents ---

// bindConn records that the agent session on the connection of ctx is agentID's, and
// returns a func that forgets it. Relayed sessions are bound by their GuestAddr instead.
func (s *Server) bindConn(ctx context.Context, agentID string) func() {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return func() {}
	}
	if _, relayed := p.Addr.(GuestAddr); relayed {
		return func() {}
	}
	key := p.Addr.String()
	s.agents.bind(key, agentID)
	return func() { s.agents.unbind(key, agentID) }
}

// leaseFor checks a blob RPC of an agent: agentID must be the agent whose session runs
// on the caller's connection (a relayed guest's attested name), and hold the current,
// live lease leaseID on task taskID with its secret. It returns the task. A refusal
// does not say who holds the task.
func (s *Server) leaseFor(ctx context.Context, agentID, taskID string, leaseID uint64, secret string) (store.Task, error) {
	if s.cfg.Blobs == nil {
		return store.Task{}, status.Error(codes.FailedPrecondition, errNoBlobs.Error())
	}
	if err := s.checkAgentToken(ctx); err != nil {
		return store.Task{}, err
	}
	if agentID == "" || taskID == "" || leaseID == 0 {
		return store.Task{}, status.Error(codes.InvalidArgument, "agent_id, task_id and lease_id are required: name the lease the blob is for")
	}
	var addr net.Addr
	if p, ok := peer.FromContext(ctx); ok {
		addr = p.Addr
	}
	if ga, relayed := addr.(GuestAddr); relayed {
		if ga.Guest != agentID {
			return store.Task{}, status.Errorf(codes.PermissionDenied, "agent_id %q is not this guest: host %s attests the connection comes from guest %q", agentID, ga.Host, ga.Guest)
		}
	} else {
		bound := ""
		if addr != nil {
			bound = s.agents.boundTo(addr.String())
		}
		if bound == "" || bound != agentID {
			return store.Task{}, status.Errorf(codes.PermissionDenied, "agent_id %q has no session on this connection: open the Session stream first and send blob RPCs on its connection", agentID)
		}
	}
	t, err := s.st.Get(ctx, taskID)
	if errors.Is(err, store.ErrNotFound) {
		return t, status.Errorf(codes.NotFound, "no task %s", taskID)
	}
	if err != nil {
		return t, status.Errorf(codes.Unavailable, "reading task %s: %v", taskID, err)
	}
	switch {
	case t.AgentID != agentID:
		return t, status.Errorf(codes.PermissionDenied, "task %s is not leased to agent %s", taskID, agentID)
	case t.LeaseID != leaseID || (t.State != store.Leased && t.State != store.Running):
		return t, status.Errorf(codes.FailedPrecondition, "lease %d of task %s is not current (superseded or expired): drop the task", leaseID, taskID)
	case !secretOK(t.LeaseSecret, secret):
		return t, status.Errorf(codes.PermissionDenied, "lease %d of task %s: lease_secret missing or wrong: send the Assign's lease_secret", leaseID, taskID)
	}
	return t, nil
}

// ReadBlob implements agentv1.AgentServiceServer.
func (as *agentService) ReadBlob(req *agentv1.ReadBlobRequest, stream agentv1.AgentService_ReadBlobServer) error {
	s := as.s
	ctx := stream.Context()
	t, err := s.leaseFor(ctx, req.GetAgentId(), req.GetTaskId(), req.GetLeaseId(), req.GetLeaseSecret())
	if err != nil {
		return err
	}
	d, err := blob.ParseDigest(req.GetDigest())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "digest: %v", err)
	}
	input := false
	for _, ref := range t.InputBlobs {
		if ref.Digest == string(d) {
			input = true
			break
		}
	}
	if !input {
		return status.Errorf(codes.PermissionDenied, "blob %s is not an input of task %s: an agent reads only its tasks' input blobs", d, t.ID)
	}
	return s.sendBlob(ctx, "agent", d, req.GetOffset(), func(b []byte) error { return stream.Send(&agentv1.BlobChunk{Data: b}) })
}

// WriteBlob implements agentv1.AgentServiceServer.
func (as *agentService) WriteBlob(stream agentv1.AgentService_WriteBlobServer) error {
	s := as.s
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message of WriteBlob must carry the header")
	}
	if _, err := s.leaseFor(ctx, h.GetAgentId(), h.GetTaskId(), h.GetLeaseId(), h.GetLeaseSecret()); err != nil {
		return err
	}
	if !guestabi.ValidName(h.GetName()) {
		return status.Errorf(codes.InvalidArgument, "header.name %q is not a valid output name: use %s", h.GetName(), guestabi.NameRule)
	}
	d, err := blob.ParseDigest(h.GetDigest())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "header.digest: %v", err)
	}
	if h.GetSize() > s.cfg.MaxOutputBytes {
		return status.Errorf(codes.ResourceExhausted, "output %q of %d bytes is over the server's limit of %d bytes of output a task (server.max_output_bytes)", h.GetName(), h.GetSize(), s.cfg.MaxOutputBytes)
	}
	info, err := s.receiveBlob(ctx, "agent", d, h.GetSize(), first.GetData(), dataOf(stream.Recv))
	if err != nil {
		return err
	}
	return stream.SendAndClose(&agentv1.WriteBlobResponse{Digest: string(info.Digest), Size: info.Size})
}

// --- the cluster port: hosts are trusted with the whole store ---

func (hs *hostService) blobsFor(ctx context.Context) error {
	if _, err := hostID(ctx); err != nil {
		return err
	}
	if hs.s.cfg.Blobs == nil {
		return status.Error(codes.FailedPrecondition, errNoBlobs.Error())
	}
	return nil
}

// StatBlob implements hostv1.HostServiceServer.
func (hs *hostService) StatBlob(ctx context.Context, req *hostv1.StatBlobRequest) (*hostv1.BlobRef, error) {
	if err := hs.blobsFor(ctx); err != nil {
		return nil, err
	}
	d, err := blob.ParseDigest(req.GetDigest())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "digest: %v", err)
	}
	info, err := hs.s.cfg.Blobs.Stat(ctx, d)
	if err != nil {
		return nil, blobStatus(err)
	}
	return &hostv1.BlobRef{Digest: string(info.Digest), Size: info.Size}, nil
}

// ReadBlob implements hostv1.HostServiceServer.
func (hs *hostService) ReadBlob(req *hostv1.ReadBlobRequest, stream hostv1.HostService_ReadBlobServer) error {
	ctx := stream.Context()
	if err := hs.blobsFor(ctx); err != nil {
		return err
	}
	d, err := blob.ParseDigest(req.GetDigest())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "digest: %v", err)
	}
	return hs.s.sendBlob(ctx, "cluster", d, req.GetOffset(), func(b []byte) error { return stream.Send(&hostv1.Chunk{Data: b}) })
}

// WriteBlob implements hostv1.HostServiceServer.
func (hs *hostService) WriteBlob(stream hostv1.HostService_WriteBlobServer) error {
	ctx := stream.Context()
	if err := hs.blobsFor(ctx); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message of WriteBlob must carry the header (digest, size)")
	}
	d, err := blob.ParseDigest(h.GetDigest())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "header.digest: %v", err)
	}
	info, err := hs.s.receiveBlob(ctx, "cluster", d, h.GetSize(), first.GetData(), dataOf(stream.Recv))
	if err != nil {
		return err
	}
	return stream.SendAndClose(&hostv1.BlobRef{Digest: string(info.Digest), Size: info.Size})
}

// --- dispatch and reports ---

// dataPath says how a's tasks get their blobs. Caller holds s.agents.mu (a's fields).
func (s *Server) dataPath(a *agent) agentv1.DataPath {
	if s.cfg.Blobs == nil {
		return agentv1.DataPath_DATA_PATH_UNSPECIFIED
	}
	if a != nil && a.hostID != "" {
		if s.hosts.stages(a.hostID) {
			return agentv1.DataPath_DATA_PATH_SHARED
		}
	}
	return agentv1.DataPath_DATA_PATH_STREAM
}

// refsTo converts blob references to one protocol's message type.
func refsTo[T any](m map[string]store.BlobRef, mk func(digest string, size int64) *T) map[string]*T {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]*T, len(m))
	for k, v := range m {
		out[k] = mk(v.Digest, v.Size)
	}
	return out
}

func agentRefs(m map[string]store.BlobRef) map[string]*agentv1.BlobRef {
	return refsTo(m, func(d string, n int64) *agentv1.BlobRef { return &agentv1.BlobRef{Digest: d, Size: n} })
}

func hostRefs(m map[string]store.BlobRef) map[string]*hostv1.BlobRef {
	return refsTo(m, func(d string, n int64) *hostv1.BlobRef { return &hostv1.BlobRef{Digest: d, Size: n} })
}

func apiRefs(m map[string]store.BlobRef) map[string]*paddockv1.BlobRef {
	return refsTo(m, func(d string, n int64) *paddockv1.BlobRef { return &paddockv1.BlobRef{Digest: d, Size: n} })
}

// outcome is what a report's output blobs make of a success: ev stays EvSucceed with
// refs to record, or turns into a failure with errText; or, when reject is set, the
// report cannot be decided now (the session ended) and nothing is recorded.
type outcome struct {
	ev      store.Event
	errText string
	kind    store.FailureKind
	refs    map[string]store.BlobRef
	reject  bool
}

func failed(kind store.FailureKind, retryable bool, format string, args ...any) outcome {
	ev := store.EvFailFatal
	if retryable {
		ev = store.EvFailRetryable
	}
	return outcome{ev: ev, errText: fmt.Sprintf(format, args...), kind: kind}
}

// outputBlobs checks the output blobs of a successful report of t by agentID and
// makes sure they are in the blob store: under DATA_PATH_SHARED the guest's host
// collects them, under DATA_PATH_STREAM the agent must have written them.
func (s *Server) outputBlobs(ctx context.Context, t store.Task, agentID string, r *agentv1.Report) outcome {
	out := r.GetOutputBlobs()
	if s.cfg.Blobs == nil {
		return failed(store.OutputTransfer, false, "the handler wrote %d output files, but %v", len(out), errNoBlobs)
	}
	refs := make(map[string]store.BlobRef, len(out))
	var total int64
	for name, ref := range out {
		d, err := blob.ParseDigest(ref.GetDigest())
		switch {
		case !guestabi.ValidName(name):
			return failed(store.BadOutput, false, "output file %q: not a valid output name (%s): fix the handler", name, guestabi.NameRule)
		case r.GetOutputs()[name] != nil:
			return failed(store.BadOutput, false, "output %q is both an inline output and an output file: fix the handler", name)
		case err != nil:
			return failed(store.BadOutput, false, "output file %q: %v", name, err)
		case ref.GetSize() < 0:
			return failed(store.BadOutput, false, "output file %q: size %d is negative", name, ref.GetSize())
		}
		total += ref.GetSize()
		refs[name] = store.BlobRef{Digest: string(d), Size: ref.GetSize()}
	}
	if total > s.cfg.MaxOutputBytes {
		return failed(store.OutputTooLarge, false, "the output files add up to %d bytes, over the server's limit of %d bytes a task (server.max_output_bytes): write less, or raise the limit", total, s.cfg.MaxOutputBytes)
	}
	s.agents.mu.Lock()
	a := s.agents.byID[agentID]
	path := s.dataPath(a)
	var host string
	var link *hostLink
	if a != nil && path == agentv1.DataPath_DATA_PATH_SHARED {
		host = a.hostID
	}
	s.agents.mu.Unlock()
	if host != "" {
		link = s.hosts.link(host)
	}
	if path == agentv1.DataPath_DATA_PATH_SHARED {
		if o := s.collect(ctx, host, link, agentID, t, refs, total); o.ev != store.EvSucceed {
			return o
		}
		return outcome{ev: store.EvSucceed, refs: refs}
	}
	for _, name := range sortedKeys(refs) {
		ref := refs[name]
		info, err := s.cfg.Blobs.Stat(ctx, blob.Digest(ref.Digest))
		switch {
		case errors.Is(err, blob.ErrNotFound):
			return failed(store.OutputTransfer, true, "output file %q (%s) is not in the blob store: the agent did not store it with WriteBlob before it reported", name, ref.Digest)
		case err != nil:
			return failed(store.OutputTransfer, true, "checking output file %q (%s) in the blob store: %v", name, ref.Digest, err)
		case info.Size != ref.Size:
			return failed(store.OutputTransfer, true, "output file %q (%s): the blob store has %d bytes, the agent reported %d", name, ref.Digest, info.Size, ref.Size)
		}
	}
	return outcome{ev: store.EvSucceed, refs: refs}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// collect asks host (over link) to collect t's output files from guest and waits for
// its Collected: at most CollectTimeout, less when the task's deadline (plus grace)
// comes first, and not past the host's control stream.
func (s *Server) collect(ctx context.Context, host string, link *hostLink, guest string, t store.Task, refs map[string]store.BlobRef, total int64) outcome {
	if link == nil {
		s.metrics.collects.WithLabelValues("host_lost").Inc()
		return failed(store.OutputTransfer, true, "collecting the output files of guest %s: its host %s is not connected", guest, host)
	}
	wait := CollectTimeout
	if t.Timeout > 0 && !t.LeasedAt.IsZero() {
		if left := time.Until(t.LeasedAt.Add(t.Timeout + s.cfg.TimeoutGrace)); left < wait {
			wait = max(left, 30*time.Second)
		}
	}
	id := s.collectSeq.Add(1)
	ch := make(chan *hostv1.Collected, 1)
	s.hosts.addCollect(id, pendingCollect{host: host, ch: ch})
	defer s.hosts.dropCollect(id)
	start := time.Now()
	link.send(&hostv1.ServerMessage{Msg: &hostv1.ServerMessage_Collect{Collect: &hostv1.Collect{
		RequestId: id, Guest: guest, TaskId: t.ID, LeaseId: t.LeaseID, Outputs: hostRefs(refs), MaxBytes: s.cfg.MaxOutputBytes,
		Tenant: t.Tenant, TaskClass: string(t.Class),
	}}})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case c := <-ch:
		s.metrics.collectSeconds.Observe(time.Since(start).Seconds())
		if c.GetError() != "" {
			s.metrics.collects.WithLabelValues("error").Inc()
			s.log.Warn("host could not collect outputs", "task", t.ID, "lease", t.LeaseID, "host", host, "guest", guest, "err", c.GetError(), "retryable", c.GetRetryable())
			return failed(store.OutputTransfer, c.GetRetryable(), "host %s collecting the output files of guest %s: %s", host, guest, c.GetError())
		}
		s.metrics.collects.WithLabelValues("ok").Inc()
		s.metrics.collectedBytes.Add(float64(total))
		s.log.Debug("outputs collected", "task", t.ID, "lease", t.LeaseID, "host", host, "files", len(refs), "bytes", total, "pending", len(c.GetPending()))
		return outcome{ev: store.EvSucceed}
	case <-link.ctx.Done():
		s.metrics.collects.WithLabelValues("host_lost").Inc()
		return failed(store.OutputTransfer, true, "host %s was lost while collecting the output files of guest %s: %v", host, guest, context.Cause(link.ctx))
	case <-timer.C:
		s.metrics.collects.WithLabelValues("timeout").Inc()
		return failed(store.OutputTransfer, true, "host %s did not collect the output files of guest %s within %v", host, guest, wait.Round(time.Second))
	case <-ctx.Done():
		o := failed(store.OutputTransfer, true, "stopped while host %s collected the output files of guest %s: %v (report again)", host, guest, context.Cause(ctx))
		o.reject = true
		return o
	}
}

// pendingCollect is a Collect waiting for its Collected.
type pendingCollect struct {
	host string
	ch   chan *hostv1.Collected
}

// collected routes a host's Collected to its waiting collect.
func (s *Server) collected(host string, c *hostv1.Collected) {
	p, ok := s.hosts.collectFor(c.GetRequestId())
	if !ok || p.host != host {
		s.log.Warn("a Collected for no pending Collect of this host (late, or answered twice)", "host", host, "request", c.GetRequestId())
		return
	}
	select {
	case p.ch <- c:
	default:
	}
}

// staged records how a host's staging of a task's inputs ended. A failure reaches the
// agent through the staging marker, and the agent reports it.
func (s *Server) staged(host string, m *hostv1.Staged) {
	s.hosts.fetchMeasured(host, m, time.Now()) // locality.go
	s.metrics.stagedBytes.WithLabelValues("fetched").Add(float64(m.GetFetchedBytes()))
	s.metrics.stagedBytes.WithLabelValues("cached").Add(float64(m.GetCachedBytes()))
	if m.GetError() != "" {
		s.metrics.staged.WithLabelValues("error").Inc()
		s.log.Warn("host could not stage a task's inputs", "host", host, "guest", m.GetGuest(), "task", m.GetTaskId(), "lease", m.GetLeaseId(), "err", m.GetError())
		return
	}
	s.metrics.staged.WithLabelValues("ok").Inc()
	s.log.Debug("inputs staged", "host", host, "guest", m.GetGuest(), "task", m.GetTaskId(), "lease", m.GetLeaseId(),
		"fetched_bytes", m.GetFetchedBytes(), "cached_bytes", m.GetCachedBytes())
}

// --- retention ---

// gcLoop runs CollectGarbage every min(BlobRetention/10, 1h) until ctx is done.
func (s *Server) gcLoop(ctx context.Context) {
	if s.cfg.Blobs == nil {
		return
	}
	every := min(s.cfg.BlobRetention/10, time.Hour)
	if every <= 0 {
		every = time.Minute
	}
	everyTick(ctx, every, func() {
		if _, err := s.CollectGarbage(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Error("collecting unused blobs", "err", err)
		}
	})
}

// touchBlobs refreshes the retention clocks of the blobs (store.TouchBlobs) under the
// read side of gcMu: a collection's check and delete of one blob (the write side) is
// either wholly before the touch or sees it.
func (s *Server) touchBlobs(ctx context.Context, digests ...string) error {
	if len(digests) == 0 {
		return nil
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	if err := s.st.TouchBlobs(ctx, digests, time.Now()); err != nil {
		return fmt.Errorf("refreshing the retention of %d blobs: %w", len(digests), err)
	}
	return nil
}

// CollectGarbage deletes every blob written before now-BlobRetention that no task uses
// (store.BlobInUse with since = now-BlobRetention: a live task names it, a task that
// finished since names it, or it was referenced since: a submit, a client's HEAD or
// PUT) and returns how many it deleted. The check and delete of each blob hold gcMu,
// so a reference (touchBlobs) is never lost between them.
// It goes on past a blob it cannot check or delete, and returns the first such error.
func (s *Server) CollectGarbage(ctx context.Context, now time.Time) (int, error) {
	if s.cfg.Blobs == nil {
		return 0, nil
	}
	cutoff := now.Add(-s.cfg.BlobRetention)
	start := time.Now()
	deleted := 0
	var freed int64
	var first error
	fail := func(err error) {
		s.metrics.gcErrors.Inc()
		if first == nil {
			first = err
		}
	}
	var after blob.Digest
	for {
		page, err := s.cfg.Blobs.List(ctx, after, blob.DefaultListLimit)
		if err != nil {
			fail(fmt.Errorf("listing blobs after %q in %s: %w", after, s.cfg.Blobs, err))
			break
		}
		for _, info := range page {
			if !info.ModTime.Before(cutoff) {
				continue
			}
			used, err := s.deleteUnused(ctx, info.Digest, cutoff)
			if err != nil {
				fail(err)
				continue
			}
			if used {
				continue
			}
			deleted++
			freed += info.Size
			s.metrics.gcDeleted.Inc()
			s.metrics.gcDeletedBytes.Add(float64(info.Size))
			s.log.Info("blob deleted (unused past retention)", "digest", info.Digest, "size", info.Size,
				"written", info.ModTime.UTC().Format(time.RFC3339), "retention", s.cfg.BlobRetention)
		}
		if len(page) < blob.DefaultListLimit || ctx.Err() != nil {
			break
		}
		after = page[len(page)-1].Digest
	}
	if deleted > 0 || first != nil {
		s.log.Info("blob retention pass", "deleted", deleted, "freed_bytes", freed, "took", time.Since(start).Round(time.Millisecond), "err", first)
	}
	return deleted, first
}

// deleteUnused deletes blob d unless it is in use since cutoff, holding gcMu.
func (s *Server) deleteUnused(ctx context.Context, d blob.Digest, cutoff time.Time) (used bool, err error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	used, err = s.st.BlobInUse(ctx, string(d), cutoff)
	if err != nil || used {
		return used, err
	}
	if err := s.cfg.Blobs.Delete(ctx, d); err != nil && !errors.Is(err, blob.ErrNotFound) {
		return false, fmt.Errorf("deleting blob %s: %w", d, err)
	}
	if err := s.st.DropBlobGrants(ctx, string(d)); err != nil { // no longer held by its uploaders
		return false, fmt.Errorf("blob %s deleted: %w", d, err)
	}
	return false, nil
}

// hasInput reports whether inline inputs hold name (an empty input counts).
func hasInput(in map[string][]byte, name string) bool {
	_, ok := in[name]
	return ok
}
