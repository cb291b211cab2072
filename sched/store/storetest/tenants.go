package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := store.Token{ID: "tok1", Tenant: "acme", Hash: "h1", CreatedAt: t0}
	b := store.Token{ID: "tok2", Tenant: "root", Admin: true, Hash: "h2", CreatedAt: t0.Add(time.Second)}
	for _, tk := range []store.Token{a, b} {
		if err := s.CreateToken(ctx, tk); err != nil {
			t.Fatalf("CreateToken(%s): %v", tk.ID, err)
		}
	}
	for _, dup := range []store.Token{{ID: "tok1", Tenant: "x", Hash: "h9", CreatedAt: t0}, {ID: "tok9", Tenant: "x", Hash: "h1", CreatedAt: t0}} {
		if err := s.CreateToken(ctx, dup); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateToken(id %s, hash %s) over an existing one: err = %v, want ErrConflict", dup.ID, dup.Hash, err)
		}
	}
	if err := s.CreateToken(ctx, store.Token{ID: "tok3", Hash: "h3"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateToken without tenant: err = %v, want ErrInvalid", err)
	}
	got, err := s.TokenByHash(ctx, "h2")
	if err != nil || got.ID != "tok2" || got.Tenant != "root" || !got.Admin || got.Revoked() || !got.CreatedAt.Equal(b.CreatedAt) {
		t.Fatalf("TokenByHash(h2) = %+v, %v", got, err)
	}
	if _, err := s.TokenByHash(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TokenByHash(unknown): err = %v, want ErrNotFound", err)
	}
	rv, err := s.RevokeToken(ctx, "tok1", t0.Add(time.Minute))
	if err != nil || !rv.Revoked() || !rv.RevokedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("RevokeToken = %+v, %v", rv, err)
	}
	rv, err = s.RevokeToken(ctx, "tok1", t0.Add(time.Hour))
	if err != nil || !rv.RevokedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("revoking again = %+v, %v: want the first revocation time kept", rv, err)
	}
	if _, err := s.RevokeToken(ctx, "nope", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RevokeToken(unknown): err = %v, want ErrNotFound", err)
	}
	if got, _ := s.TokenByHash(ctx, "h1"); !got.Revoked() {
		t.Fatalf("TokenByHash of a revoked token = %+v: want it revoked", got)
	}
	all, err := s.Tokens(ctx)
	if err != nil || len(all) != 2 || all[0].ID != "tok1" || all[1].ID != "tok2" || all[0].Hash != "h1" {
		t.Fatalf("Tokens = %+v, %v", all, err)
	}
}

func testTenantQueues(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i, tn := range []string{"a", "b", "a", "b", "a"} {
		tk := NewTask(string(rune('1'+i)), "echo")
		tk.Tenant = tn
		mustCreate(t, s, tk)
	}
	other := NewTask("x", "other")
	other.Tenant = "a"
	mustCreate(t, s, other)
	if n, err := s.CountTenant(ctx, "a", store.Queued); err != nil || n != 4 {
		t.Fatalf("CountTenant(a, queued) = %d, %v; want 4", n, err)
	}
	if _, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "1", AgentID: "ag", ExpiresAt: t0.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountTenant(ctx, "a", store.Queued); n != 3 {
		t.Fatalf("CountTenant(a, queued) after a lease = %d; want 3", n)
	}
	if n, _ := s.CountTenant(ctx, "a", store.Leased); n != 1 {
		t.Fatalf("CountTenant(a, leased) = %d; want 1", n)
	}
	ready, err := s.ReadyTenant(ctx, "echo", "b", t0, 10)
	if err != nil || len(ready) != 2 || ready[0].ID != "2" || ready[1].ID != "4" {
		t.Fatalf("ReadyTenant(echo, b) = %v, %v; want tasks 2 and 4", ids(ready), err)
	}
	ready, _ = s.ReadyTenant(ctx, "echo", "a", t0, 1)
	if len(ready) != 1 || ready[0].ID != "3" || ready[0].Tenant != "a" {
		t.Fatalf("ReadyTenant(echo, a, limit 1) = %v; want task 3", ids(ready))
	}
}

func ids(ts []store.Task) []string {
	out := make([]string, len(ts))
	for i := range ts {
		out[i] = ts[i].ID
	}
	return out
}

func testUsage(t *testing.T, s store.Store) {
	ctx := context.Background()
	type run struct {
		id, tenant string
		u          store.Usage
		at         time.Time
	}
	runs := []run{
		{"u1", "a", store.Usage{Wall: 2 * time.Second, CPU: time.Second, MemoryBytes: 1 << 30, BytesIn: 100, BytesOut: 10, Host: "h1"}, t0.Add(time.Hour)},
		{"u2", "a", store.Usage{Wall: 4 * time.Second, CPU: 3 * time.Second, MemoryBytes: 2 << 30, BytesIn: 1, BytesOut: 2, Host: "h2"}, t0.Add(2 * time.Hour)},
		{"u3", "b", store.Usage{Wall: time.Second, MemoryBytes: 1 << 30, Host: "h1"}, t0.Add(2 * time.Hour)},
		{"u4", "a", store.Usage{Wall: time.Hour, CPU: time.Hour}, t0}, // before since
	}
	for _, r := range runs {
		tk := NewTask(r.id, "echo")
		tk.Tenant = r.tenant
		mustCreate(t, s, tk)
		ls, err := s.Lease(ctx, r.at.Add(-time.Second), []store.Grant{{TaskID: r.id, AgentID: "ag", ExpiresAt: r.at.Add(time.Minute)}})
		if err != nil || len(ls) != 1 {
			t.Fatalf("leasing %s: %v, %v", r.id, ls, err)
		}
		if _, err := s.Update(ctx, store.Update{TaskID: r.id, From: []store.State{store.Leased}, LeaseID: ls[0].LeaseID, To: store.Succeeded,
			Now: r.at, EndAttempt: true, Usage: r.u}); err != nil {
			t.Fatal(err)
		}
	}
	att, err := s.Attempts(ctx, "u2")
	if err != nil || len(att) != 1 || att[0].Usage != runs[1].u {
		t.Fatalf("Attempts(u2) = %+v, %v; want usage %+v", att, err, runs[1].u)
	}
	us, err := s.Usage(ctx, "", t0.Add(time.Minute))
	if err != nil || len(us) != 2 {
		t.Fatalf("Usage(all) = %+v, %v; want tenants a and b", us, err)
	}
	a := us[0]
	want := store.TenantUsage{Tenant: "a", Attempts: 2, Wall: 6 * time.Second, CPU: 4 * time.Second,
		MemoryByteMillis: float64(1<<30)*2000 + float64(2<<30)*4000, BytesIn: 101, BytesOut: 12}
	if a != want {
		t.Fatalf("Usage of a = %+v; want %+v", a, want)
	}
	if g := a.GiBSeconds(); g != 10 {
		t.Fatalf("GiBSeconds = %v; want 10", g)
	}
	only, err := s.Usage(ctx, "b", t0.Add(time.Minute))
	if err != nil || len(only) != 1 || only[0].Tenant != "b" || only[0].Attempts != 1 || only[0].Wall != time.Second {
		t.Fatalf("Usage(b) = %+v, %v", only, err)
	}
	if none, err := s.Usage(ctx, "nobody", t0); err != nil || len(none) != 0 {
		t.Fatalf("Usage(nobody) = %+v, %v; want nothing", none, err)
	}
}
