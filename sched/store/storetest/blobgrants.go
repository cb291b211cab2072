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
	if err := s.GrantBlob(ctx, up, "acme", t0); err != nil {
		t.Fatal(err)
	}
	if err := s.GrantBlob(ctx, up, "acme", t0); err != nil { // a second upload changes nothing
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
