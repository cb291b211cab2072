package storetest

import (
	"context"
	"testing"

	"github.com/paddockvm/paddock/sched/store"
)

// testBlobGrants: a tenant may read a blob granted to it, or one its own task names as
// an input or an output; no other tenant may.
func testBlobGrants(t *testing.T, s store.Store) {
	ctx := context.Background()
	const up, in, out = "sha256:" + "1111111111111111111111111111111111111111111111111111111111111111",
		"sha256:" + "2222222222222222222222222222222222222222222222222222222222222222",
		"sha256:" + "3333333333333333333333333333333333333333333333333333333333333333"
	if err := s.GrantBlob(ctx, up, "acme", 100, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.GrantBlob(ctx, up, "acme", 100, t0); err != nil { // a second upload changes nothing
		t.Fatalf("GrantBlob again: %v", err)
	}
	tk := NewTask("g1", "echo")
	tk.Tenant = "acme"
	tk.InputBlobs = map[string]store.BlobRef{"in": {Digest: in, Size: 1}}
	mustCreate(t, s, tk)
	got, err := s.Lease(ctx, t0, []store.Grant{{TaskID: "g1", AgentID: "a", ExpiresAt: t0.Add(60e9), Secret: "s"}})
	if err != nil || len(got) != 1 {
		t.Fatalf("Lease: %v %v", got, err)
	}
	u, err := store.Transition(got[0], store.EvSucceed, store.Change{Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	u.OutputBlobs = map[string]store.BlobRef{"out": {Digest: out, Size: 1}}
	if _, err := s.Update(ctx, u); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		digest, tenant string
		want           bool
	}{
		{up, "acme", true}, {in, "acme", true}, {out, "acme", true},
		{up, "other", false}, {in, "other", false}, {out, "other", false},
		{"sha256:" + "4444444444444444444444444444444444444444444444444444444444444444", "acme", false},
	} {
		ok, err := s.BlobGranted(ctx, c.digest, c.tenant)
		if err != nil || ok != c.want {
			t.Errorf("BlobGranted(%s…, %s) = %v, %v; want %v", c.digest[:12], c.tenant, ok, err, c.want)
		}
	}
}

// testTenantBlobBytes: a tenant's stored bytes are the sizes of the blobs granted to it,
// each counted once however often it is uploaded; a blob's deletion (DropBlobGrants)
// takes it off every uploader's sum; blobs its tasks only name do not count.
func testTenantBlobBytes(t *testing.T, s store.Store) {
	ctx := context.Background()
	const a, b = "sha256:" + "5555555555555555555555555555555555555555555555555555555555555555",
		"sha256:" + "6666666666666666666666666666666666666666666666666666666666666666"
	want := func(tenant string, n int64) {
		t.Helper()
		got, err := s.TenantBlobBytes(ctx, tenant)
		if err != nil || got != n {
			t.Errorf("TenantBlobBytes(%s) = %d, %v; want %d", tenant, got, err, n)
		}
	}
	want("quota", 0)
	for _, g := range []struct {
		digest, tenant string
		size           int64
	}{{a, "quota", 1000}, {a, "quota", 1000}, {b, "quota", 1 << 40}, {a, "other", 1000}} {
		if err := s.GrantBlob(ctx, g.digest, g.tenant, g.size, t0); err != nil {
			t.Fatalf("GrantBlob(%s…, %s, %d): %v", g.digest[:12], g.tenant, g.size, err)
		}
	}
	want("quota", 1000+1<<40)
	want("other", 1000)
	tk := NewTask("tb1", "echo")
	tk.Tenant = "named"
	tk.InputBlobs = map[string]store.BlobRef{"in": {Digest: a, Size: 1000}}
	mustCreate(t, s, tk)
	want("named", 0)
	if err := s.DropBlobGrants(ctx, a); err != nil {
		t.Fatalf("DropBlobGrants: %v", err)
	}
	want("quota", 1<<40)
	want("other", 0)
	if ok, err := s.BlobGranted(ctx, a, "other"); err != nil || ok {
		t.Errorf("BlobGranted after its grants were dropped = %v, %v; want false", ok, err)
	}
	if err := s.DropBlobGrants(ctx, a); err != nil { // nothing left to drop
		t.Errorf("DropBlobGrants again: %v", err)
	}
}
