package tenant

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestOrderWeights(t *testing.T) {
	// a's tasks come first in the store's order; weights 1 and 3 over 4 slots.
	tenants := []string{"a", "a", "a", "a", "a", "a", "b", "b", "b", "b", "b", "b"}
	c := Config{"a": {Weight: 1}, "b": {Weight: 3}}
	got := Order(tenants, nil, c)
	count := map[string]int{}
	for _, i := range got[:4] {
		count[tenants[i]]++
	}
	if count["a"] != 1 || count["b"] != 3 {
		t.Fatalf("first 4 of the order: %v; want 1 of a and 3 of b", count)
	}
	if len(got) != len(tenants) {
		t.Fatalf("order has %d tasks, want all %d", len(got), len(tenants))
	}
	// Steady state: b runs 3 and a 0: a slot freed goes to a.
	got = Order(tenants, map[string]int{"b": 3}, c)
	if tenants[got[0]] != "a" {
		t.Fatalf("with b at its share, the next task is %s's; want a's", tenants[got[0]])
	}
	// a runs 1, b 2: b is below its share (2/3 < 1/1).
	got = Order(tenants, map[string]int{"a": 1, "b": 2}, c)
	if tenants[got[0]] != "b" {
		t.Fatalf("with b below its share, the next task is %s's; want b's", tenants[got[0]])
	}
}

func TestOrderKeepsStoreOrderWithinTenant(t *testing.T) {
	tenants := []string{"x", "y", "x", "y", "x"}
	got := Order(tenants, nil, nil)
	want := []int{0, 1, 2, 3, 4}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Order = %v, want %v", got, want)
		}
	}
	one := Order([]string{"x", "x", "x"}, map[string]int{"x": 5}, nil)
	if len(one) != 3 || one[0] != 0 || one[2] != 2 {
		t.Fatalf("one tenant: Order = %v, want the store's order", one)
	}
}

func TestOrderMaxRunning(t *testing.T) {
	tenants := []string{"a", "a", "a", "b"}
	got := Order(tenants, map[string]int{"a": 1}, Config{"a": {MaxRunning: 2}})
	n := 0
	for _, i := range got {
		if tenants[i] == "a" {
			n++
		}
	}
	if n != 1 || len(got) != 2 {
		t.Fatalf("Order = %v: want one task of a (running 1 of max 2) and b's", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		c       Config
		wantErr string
	}{
		{"ok", Config{"acme": {Weight: 2, MaxRunning: 4, MaxQueued: 100}}, ""},
		{"bad name", Config{"no/slash": {}}, "tenants.no/slash"},
		{"negative weight", Config{"a": {Weight: -1}}, "tenants.a.weight"},
		{"negative max_running", Config{"a": {MaxRunning: -1}}, "tenants.a.max_running"},
		{"negative max_queued", Config{"a": {MaxQueued: -5}}, "tenants.a.max_queued"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v; want an error naming %s", err, tc.wantErr)
			}
		})
	}
}

func TestPrices(t *testing.T) {
	one, two, half := 1.0, 2.0, 0.5
	p := Prices{CPUSecond: &one, GiBSecond: &two, GiBMoved: &half}
	c, err := p.Cost(10, 3, 4<<30)
	if err != nil || math.Abs(c-(10+6+2)) > 1e-9 {
		t.Fatalf("Cost = %v, %v; want 18", c, err)
	}
	missing := Prices{CPUSecond: &one}
	if _, err := missing.Cost(1, 1, 1); !errors.Is(err, ErrNoPrices) {
		t.Fatalf("Cost with prices missing: err = %v, want ErrNoPrices", err)
	}
	if m := missing.Missing(); len(m) != 2 || m[0] != "server.prices.gib_second" {
		t.Fatalf("Missing = %v", m)
	}
	neg := -1.0
	if err := (Prices{GiBMoved: &neg}).Validate(); err == nil || !strings.Contains(err.Error(), "server.prices.gib_moved") {
		t.Fatalf("Validate of a negative price = %v; want an error naming server.prices.gib_moved", err)
	}
}

func TestTokens(t *testing.T) {
	a, ida, err := New()
	if err != nil {
		t.Fatal(err)
	}
	b, idb, _ := New()
	if a == b || ida == idb || !strings.HasPrefix(a, TokenPrefix) {
		t.Fatalf("New = %q/%q, %q/%q: want distinct tokens with prefix %s", a, ida, b, idb, TokenPrefix)
	}
	if Hash(a) == Hash(b) || Hash(a) != Hash(a) || strings.Contains(Hash(a), a) {
		t.Fatal("Hash: want a stable digest that differs between tokens and does not hold the token")
	}
	if tok, ok := BearerToken("Bearer " + a); !ok || tok != a {
		t.Fatalf("BearerToken = %q, %v", tok, ok)
	}
	if _, ok := BearerToken("Basic x"); ok {
		t.Fatal("BearerToken accepted a Basic header")
	}
	ctx := With(context.Background(), Principal{Tenant: "a"})
	p, ok := From(ctx)
	if !ok || !p.Sees("a") || p.Sees("b") || !(Principal{Admin: true}).Sees("b") {
		t.Fatalf("From/Sees = %+v, %v", p, ok)
	}
}
