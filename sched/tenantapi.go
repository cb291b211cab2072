package sched

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

// tenantMetrics are the per-tenant counters of accounting (labelled by tenant: their
// number is bounded by the tenants an admin made tokens for).
type tenantMetrics struct {
	tenantCPU      *prometheus.CounterVec // handler CPU seconds
	tenantWall     *prometheus.CounterVec // attempt wall seconds
	tenantGiBSec   *prometheus.CounterVec // guest GiB-seconds
	tenantBytes    *prometheus.CounterVec // blob bytes, by direction (in, out)
	tenantAttempts *prometheus.CounterVec // attempts ended
	tenantRefused  *prometheus.CounterVec // submits refused over max_queued
}

func newTenantMetrics(reg *prometheus.Registry) tenantMetrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "paddock", Name: name, Help: help}, append([]string{"tenant"}, labels...))
		reg.MustRegister(c)
		return c
	}
	return tenantMetrics{
		tenantCPU:      cv("tenant_cpu_seconds_total", "Handler CPU seconds of ended attempts, by tenant."),
		tenantWall:     cv("tenant_wall_seconds_total", "Wall seconds of ended attempts (as the agents measured them), by tenant."),
		tenantGiBSec:   cv("tenant_gib_seconds_total", "Guest memory (GiB) × wall seconds of ended attempts, by tenant."),
		tenantBytes:    cv("tenant_bytes_total", "Blob bytes ended attempts moved, by tenant and direction (in: inputs fetched, out: outputs written).", "direction"),
		tenantAttempts: cv("tenant_attempts_total", "Attempts ended with a report, by tenant."),
		tenantRefused:  cv("tenant_submits_refused_total", "Submits refused because the tenant was at its max_queued, by tenant."),
	}
}

// attemptUsage is what an attempt of t on agent agentID used, from the agent's
// report (wall, cpu) and what the server knows (the agent's memory and host, the
// task's input blobs, the outputs written).
func (s *Server) attemptUsage(agentID string, t store.Task, wall, cpu time.Duration, out map[string]store.BlobRef) store.Usage {
	u := store.Usage{Wall: wall, CPU: cpu}
	s.agents.mu.Lock()
	if a := s.agents.byID[agentID]; a != nil {
		u.MemoryBytes, u.Host = a.capacity.MemoryBytes, a.hostID
		if u.Host == "" {
			u.Host = a.host
		}
	}
	s.agents.mu.Unlock()
	for _, b := range t.InputBlobs {
		u.BytesIn += b.Size
	}
	for _, b := range out {
		u.BytesOut += b.Size
	}
	return u
}

// countUsage adds an ended attempt's usage to the tenant counters.
func (m *metrics) countUsage(tn string, u store.Usage) {
	m.tenantAttempts.WithLabelValues(tn).Inc()
	m.tenantCPU.WithLabelValues(tn).Add(u.CPU.Seconds())
	m.tenantWall.WithLabelValues(tn).Add(u.Wall.Seconds())
	m.tenantGiBSec.WithLabelValues(tn).Add(float64(u.MemoryBytes) / (1 << 30) * u.Wall.Seconds())
	m.tenantBytes.WithLabelValues(tn, "in").Add(float64(u.BytesIn))
	m.tenantBytes.WithLabelValues(tn, "out").Add(float64(u.BytesOut))
}

// admin refuses a caller without an admin token.
func admin(ctx context.Context, what string) error {
	if p := caller(ctx); !p.Admin {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s needs an admin token (the server's client token, or one made with paddock token create --admin); yours belongs to tenant %q", what, p.Tenant))
	}
	return nil
}

func tokenInfo(t store.Token) *paddockv1.TokenInfo {
	return &paddockv1.TokenInfo{Id: t.ID, Tenant: t.Tenant, Admin: t.Admin, CreatedAtUnixMs: unixMS(t.CreatedAt), RevokedAtUnixMs: unixMS(t.RevokedAt)}
}

// CreateToken implements paddockv1connect.TenantServiceHandler.
func (api *clientAPI) CreateToken(ctx context.Context, req *connect.Request[paddockv1.CreateTokenRequest]) (*connect.Response[paddockv1.CreateTokenResponse], error) {
	if err := admin(ctx, "creating a token"); err != nil {
		return nil, err
	}
	tn := req.Msg.GetTenant()
	switch {
	case tn == "":
		return nil, invalid("tenant: missing: name the tenant the token's tasks belong to")
	case !tenant.ValidName(tn):
		return nil, invalid("tenant: %q is not a tenant name: use %s", tn, tenant.NameRule)
	}
	text, id, err := tenant.New()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	tok := store.Token{ID: id, Tenant: tn, Admin: req.Msg.GetAdmin(), Hash: tenant.Hash(text), CreatedAt: time.Now()}
	if err := api.s.st.CreateToken(ctx, tok); err != nil {
		return nil, storeErr(err)
	}
	api.s.log.Info("token created", "id", id, "tenant", tn, "admin", tok.Admin, "by", caller(ctx).TokenID)
	return connect.NewResponse(&paddockv1.CreateTokenResponse{Token: text, Info: tokenInfo(tok)}), nil
}

// ListTokens implements paddockv1connect.TenantServiceHandler.
func (api *clientAPI) ListTokens(ctx context.Context, _ *connect.Request[paddockv1.ListTokensRequest]) (*connect.Response[paddockv1.ListTokensResponse], error) {
	if err := admin(ctx, "listing tokens"); err != nil {
		return nil, err
	}
	ts, err := api.s.st.Tokens(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &paddockv1.ListTokensResponse{}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, tokenInfo(t))
	}
	return connect.NewResponse(out), nil
}

// RevokeToken implements paddockv1connect.TenantServiceHandler.
func (api *clientAPI) RevokeToken(ctx context.Context, req *connect.Request[paddockv1.RevokeTokenRequest]) (*connect.Response[paddockv1.RevokeTokenResponse], error) {
	if err := admin(ctx, "revoking a token"); err != nil {
		return nil, err
	}
	if req.Msg.GetId() == "" {
		return nil, invalid("id: missing: give the token's id (paddock token ls)")
	}
	t, err := api.s.st.RevokeToken(ctx, req.Msg.GetId(), time.Now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("id: no token %s (paddock token ls lists them)", req.Msg.GetId()))
	}
	if err != nil {
		return nil, storeErr(err)
	}
	api.s.log.Info("token revoked", "id", t.ID, "tenant", t.Tenant, "by", caller(ctx).TokenID)
	return connect.NewResponse(&paddockv1.RevokeTokenResponse{Token: tokenInfo(t)}), nil
}

// Usage implements paddockv1connect.TenantServiceHandler.
func (api *clientAPI) Usage(ctx context.Context, req *connect.Request[paddockv1.UsageRequest]) (*connect.Response[paddockv1.UsageResponse], error) {
	p := caller(ctx)
	tn := req.Msg.GetTenant()
	switch {
	case tn != "" && !tenant.ValidName(tn):
		return nil, invalid("tenant: %q is not a tenant name: use %s", tn, tenant.NameRule)
	case !p.Admin && tn != "" && tn != p.Tenant:
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("tenant: %q is not the tenant of your token (%q): leave it empty for your own usage", tn, p.Tenant))
	case !p.Admin:
		tn = p.Tenant
	}
	since := req.Msg.GetSinceUnixMs()
	if since < 0 {
		return nil, invalid("since_unix_ms: %d is negative: give a time in Unix milliseconds", since)
	}
	us, err := api.s.st.Usage(ctx, tn, time.UnixMilli(since))
	if err != nil {
		return nil, storeErr(err)
	}
	prices := api.s.cfg.Prices
	out := &paddockv1.UsageResponse{}
	if m := prices.Missing(); len(m) > 0 {
		out.Note = "no cost: prices not configured (" + strings.Join(m, ", ") + "); usage is shown without cost"
	}
	for _, u := range us {
		pu := &paddockv1.TenantUsage{Tenant: u.Tenant, Attempts: u.Attempts, WallSeconds: u.Wall.Seconds(), CpuSeconds: u.CPU.Seconds(),
			GibSeconds: u.GiBSeconds(), BytesIn: u.BytesIn, BytesOut: u.BytesOut}
		if c, err := prices.Cost(pu.CpuSeconds, pu.GibSeconds, u.BytesIn+u.BytesOut); err == nil {
			pu.Cost, pu.HasCost = c, true
		}
		out.Tenants = append(out.Tenants, pu)
	}
	return connect.NewResponse(out), nil
}
