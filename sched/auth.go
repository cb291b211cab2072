package sched

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

// Client authentication and tenants.
//
// A caller is a tenant.Principal. In dev mode every caller is the admin of tenant
// "default". Otherwise the bearer token decides: the configured client token
// (server.token) is an admin token of tenant "default"; any other token is looked up
// by its SHA-256 in the store (tokens made with paddock token create). There is no
// cache: every request reads the token's row, so a revoked token is refused by the
// very next request on every replica sharing the store (no delay beyond the revoke's
// own commit).
//
// An error says why, and never which tenant owns what: a task of another tenant is
// "not found", exactly as a task that does not exist.

// errAuth is an authentication failure (CodeUnauthenticated).
type errAuth struct{ msg string }

func (e errAuth) Error() string { return e.msg }

// authenticate returns the principal of an Authorization header value.
func (s *Server) authenticate(ctx context.Context, header string) (tenant.Principal, error) {
	if s.cfg.Dev {
		return tenant.Principal{Tenant: DefaultTenant, Admin: true}, nil
	}
	if header == "" {
		return tenant.Principal{}, errAuth{"authorization: missing bearer token: send \"Authorization: Bearer <token>\" (paddock: --token or PADDOCK_CLIENT_TOKEN)"}
	}
	tok, ok := tenant.BearerToken(header)
	if !ok {
		return tenant.Principal{}, errAuth{"authorization: not a bearer token: send \"Authorization: Bearer <token>\""}
	}
	if constantTimeEqual(header, "Bearer "+s.cfg.Token) {
		return tenant.Principal{Tenant: DefaultTenant, Admin: true}, nil
	}
	st, err := s.st.TokenByHash(ctx, tenant.Hash(tok))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return tenant.Principal{}, errAuth{"authorization: wrong bearer token"}
	case err != nil:
		return tenant.Principal{}, fmt.Errorf("authorization: reading the token: %w", err)
	case st.Revoked():
		return tenant.Principal{}, errAuth{fmt.Sprintf("authorization: token %s was revoked at %s: ask an admin for a new one (paddock token create)",
			st.ID, st.RevokedAt.UTC().Format(time.RFC3339))}
	}
	return tenant.Principal{Tenant: st.Tenant, Admin: st.Admin, TokenID: st.ID}, nil
}

// authCode is the connect code of an authenticate error.
func authCode(err error) connect.Code {
	var ea errAuth
	if errors.As(err, &ea) {
		return connect.CodeUnauthenticated
	}
	return connect.CodeUnavailable
}

// caller is the principal of a request: the one guard or the interceptor put in ctx.
// A ctx without one is the server's own call (tests, Retry's Submit): the admin.
func caller(ctx context.Context) tenant.Principal {
	if p, ok := tenant.From(ctx); ok {
		return p
	}
	return tenant.Principal{Tenant: DefaultTenant, Admin: true}
}

// notFound is the error for a task that does not exist or that the caller may not see.
func notFound(id string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("task %s: %w", id, store.ErrNotFound))
}

// visible returns task id if the caller may see it, else the same not-found error as
// for a task that does not exist.
func (s *Server) visible(ctx context.Context, id string) (store.Task, error) {
	if id == "" {
		return store.Task{}, invalid("id: missing: give the task id")
	}
	t, err := s.st.Get(ctx, id)
	if err != nil {
		return t, storeErr(err)
	}
	if !caller(ctx).Sees(t.Tenant) {
		return store.Task{}, notFound(id)
	}
	return t, nil
}

// assignTenant sets the tenant of a submitted task from the caller's token. The body's
// task.tenant may be empty or the caller's own; an admin may name any tenant and so
// act for it. Another tenant in a non-admin's body is refused, naming the field.
func (s *Server) assignTenant(ctx context.Context, body string, t *store.Task) error {
	p := caller(ctx)
	switch {
	case body == "" || body == p.Tenant:
		t.Tenant = p.Tenant
	case !tenant.ValidName(body):
		return invalid("task.tenant: %q is malformed: use %s (or leave it empty: the tenant comes from the token)", body, tenant.NameRule)
	case p.Admin:
		t.Tenant = body
	default:
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"task.tenant: %q is not the tenant of your token (%q): leave task.tenant empty; a task's tenant comes from the token that submits it", body, p.Tenant))
	}
	return nil
}

// checkQueued refuses adding n tasks to tenant's queue past its max_queued. The check
// reads the count, then the submit writes: concurrent submits may pass it together
// (a soft limit, over by at most the submits in flight).
func (s *Server) checkQueued(ctx context.Context, tn string, n int) error {
	l := s.cfg.Tenants.Of(tn)
	if l.MaxQueued <= 0 {
		return nil
	}
	q, err := s.st.CountTenant(ctx, tn, store.Queued)
	if err != nil {
		return storeErr(err)
	}
	if q+int64(n) > int64(l.MaxQueued) {
		s.metrics.tenantRefused.WithLabelValues(tn).Inc()
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"tenant %s: %d tasks queued and %d more would pass its limit of %d queued tasks (tenants.%s.max_queued): wait for some to start, or ask an admin to raise the limit",
			tn, q, n, l.MaxQueued, tn))
	}
	return nil
}

// streamAuth authenticates a streaming call (the unary interceptor does not see
// them): the principal guard put in ctx, else the header's. It returns ctx carrying it.
func (s *Server) streamAuth(ctx context.Context, header string) (context.Context, error) {
	if _, ok := tenant.From(ctx); ok {
		return ctx, nil
	}
	p, err := s.authenticate(ctx, header)
	if err != nil {
		return ctx, connect.NewError(authCode(err), err)
	}
	return tenant.With(ctx, p), nil
}
