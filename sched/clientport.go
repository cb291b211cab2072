package sched

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/sync/semaphore"

	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/blob/blobhttp"
	"github.com/paddockvm/paddock/sched/console"
	"github.com/paddockvm/paddock/sched/tenant"
)

// Limits of the client port's HTTP server.
const (
	// ClientReadHeaderTimeout bounds reading a request's headers (and an h2c preface).
	ClientReadHeaderTimeout = 10 * time.Second
	// ClientIdleTimeout closes a keep-alive (or h2c) connection idle this long.
	ClientIdleTimeout = 2 * time.Minute
	// ClientBodyProgressTimeout: a request body that sends no byte for this long is cut
	// (each read of a body has this deadline; a slow but moving upload is fine).
	ClientBodyProgressTimeout = 30 * time.Second
	// MinClientBodyBudget is the least of the bytes of API request bodies being read at
	// once (the budget is the larger of this and four largest requests); a request
	// whose body would go past it waits.
	MinClientBodyBudget = 64 << 20
)

// clientServer returns the client port's HTTP server: h2c, header, idle and body
// timeouts, and the guard in front of the handlers.
func (s *Server) clientServer() *http.Server {
	h2 := &http2.Server{IdleTimeout: ClientIdleTimeout, MaxConcurrentStreams: 250}
	hs := &http.Server{
		Handler:           h2c.NewHandler(s.guard(s.withConsole(s.withGRPCServices(s.Handler()))), h2),
		ReadHeaderTimeout: ClientReadHeaderTimeout,
		IdleTimeout:       ClientIdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	hs.RegisterOnShutdown(s.feed.close) // ends the console's event streams, so Shutdown need not wait for them
	return hs
}

// withConsole serves the web console (package console) under /ui next to api.
func (s *Server) withConsole(api http.Handler) http.Handler {
	ui := console.Handler(s.feed, s.log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if console.Handles(r.URL.Path) {
			if p := caller(r.Context()); !p.Admin && r.URL.Path == console.EventsPath {
				// A tenant's feed carries only its own tasks' changes.
				console.Handler(tenantFeed{s.feed, p.Tenant}, s.log).ServeHTTP(w, r)
				return
			}
			ui.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// maxRequestBytes is the largest API request body (connect's ReadMaxBytes).
func (s *Server) maxRequestBytes() int { return 2*s.cfg.MaxInlineBytes + (1 << 20) }

// guard runs in front of every client-port handler, before any byte of a body is
// read: an API call (connect) without the client token is refused at once; the bytes
// of API request bodies being read at once are bounded (bodyBudget); and every body
// read has a progress deadline (ClientBodyProgressTimeout), so a stalled upload is cut.
// /healthz, grpc.health.v1 (grpcext.go), /metrics and the web console's static assets
// (console.Public: the page, no data) need no token; the console's feed does; /v1/blobs checks it itself (blobhttp's
// Authorize, also before the body) and streams bodies to the store, so it only gets the
// progress deadline.
func (s *Server) guard(next http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := !strings.HasPrefix(r.URL.Path, blobhttp.Prefix) && r.URL.Path != "/healthz" && r.URL.Path != "/metrics" && !isHealthPath(r.URL.Path) && !console.Public(r.URL.Path)
		if api {
			p, err := s.authenticate(r.Context(), r.Header.Get("Authorization"))
			if err != nil {
				s.metrics.refused.WithLabelValues("client_token").Inc()
				if r.ProtoMajor == 1 {
					w.Header().Set("Connection", "close") // do not read the refused body
				}
				cerr := connect.NewError(authCode(err), err)
				if ew.IsSupported(r) {
					_ = ew.Write(w, r, cerr)
				} else {
					http.Error(w, err.Error(), http.StatusUnauthorized)
				}
				return
			}
			r = r.WithContext(tenant.With(r.Context(), p))
		}
		// An ordered stream's body lasts as long as the stream and is read only as its
		// window allows (streamapi.go bounds what it holds): no budget, no progress deadline.
		if r.Body == nil || r.Body == http.NoBody || r.URL.Path == paddockv1connect.TaskServiceStreamProcedure {
			next.ServeHTTP(w, r)
			return
		}
		gb := &guardedBody{rc: r.Body, ctl: http.NewResponseController(w), ctx: r.Context()}
		if api {
			gb.sem = s.bodyBudget
		}
		defer gb.done()
		r.Body = gb
		next.ServeHTTP(w, r)
	})
}

// guardedBody is a request body read with a progress deadline on every read and, for
// API calls, bytes taken from the server's budget of bodies in flight (given back
// when the handler returns: connect holds the body until then).
type guardedBody struct {
	rc  io.ReadCloser
	ctl *http.ResponseController
	ctx context.Context
	sem *semaphore.Weighted

	mu   sync.Mutex
	held int64
	eof  bool
}

// readChunk bounds one read (and so the budget one read takes).
const readChunk = 64 << 10

func (b *guardedBody) Read(p []byte) (int, error) {
	if len(p) > readChunk {
		p = p[:readChunk]
	}
	b.mu.Lock()
	sem := b.sem // nil once the handler returned: a late read (a drain) takes no budget
	b.mu.Unlock()
	if sem != nil {
		// Wait at most the progress timeout for room in the budget.
		ctx, cancel := context.WithTimeout(b.ctx, ClientBodyProgressTimeout)
		err := sem.Acquire(ctx, int64(len(p)))
		cancel()
		if err != nil {
			return 0, errors.New("request body: the server is reading too many request bodies at once; try again")
		}
	}
	_ = b.ctl.SetReadDeadline(time.Now().Add(ClientBodyProgressTimeout))
	n, err := b.rc.Read(p)
	if sem != nil {
		sem.Release(int64(len(p) - n))
		b.mu.Lock()
		if b.sem != nil {
			b.held += int64(n)
		} else {
			sem.Release(int64(n)) // the handler returned meanwhile
		}
		b.mu.Unlock()
	}
	if err != nil {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
		_ = b.ctl.SetReadDeadline(time.Time{}) // the body is done: no deadline while the call runs (Wait)
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.rc.Close() }

// done gives back the budget the body took.
func (b *guardedBody) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sem != nil && b.held > 0 {
		b.sem.Release(b.held)
	}
	b.sem, b.held = nil, 0
	if !b.eof {
		_ = b.ctl.SetReadDeadline(time.Time{})
	}
}
