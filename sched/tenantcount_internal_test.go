package sched

import (
	"context"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/store/sqlite"
	"github.com/paddockvm/paddock/sched/tenant"
)

// TestWaitsBoundedPerTenant: a tenant holding MaxTenantWaits open Waits is refused one
// more (resource_exhausted, naming the limit), while another tenant and the admins still
// wait; a Wait that ends gives its slot back.
func TestWaitsBoundedPerTenant(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{Dev: true}, st)
	if err != nil {
		t.Fatal(err)
	}
	api := &clientAPI{s: s}
	a, b := tenant.Principal{Tenant: "a"}, tenant.Principal{Tenant: "b"}
	var held []func()
	for range MaxTenantWaits {
		done, err := s.waitSlot(a)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, done)
	}
	wait := func(p tenant.Principal) error {
		_, err := api.Wait(tenant.With(context.Background(), p), connect.NewRequest(&paddockv1.WaitRequest{Id: "no-such-task", TimeoutMs: 1}))
		return err
	}
	if err := wait(a); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("tenant a's Wait past the limit: %v, want resource_exhausted", err)
	}
	// Past the limiter, a Wait on a task that does not exist is "not found".
	for _, p := range []tenant.Principal{b, {Tenant: "a", Admin: true}} {
		if err := wait(p); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%+v waits while a is at its limit: %v, want not_found (past the limit check)", p, err)
		}
	}
	held[0]()
	held[0]() // giving a slot back twice gives back one
	if err := wait(a); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("tenant a's Wait after one ended: %v, want not_found (past the limit check)", err)
	}
	if _, err := s.waitSlot(a); err != nil {
		t.Fatalf("the slot the last Wait used was not given back: %v", err)
	}
	if _, err := s.waitSlot(a); err == nil {
		t.Fatal("a slot given back twice counted twice")
	}
}
