package alloc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/alloc"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func TestValidate(t *testing.T) {
	ok := alloc.TypeConfig{Name: "a", Min: 1, TolerableDelay: time.Second}
	for _, tc := range []struct {
		name    string
		cfg     alloc.Config
		wantErr string
	}{
		{"ok", alloc.Config{Total: 2, Types: []alloc.TypeConfig{ok}}, ""},
		{"no slots", alloc.Config{Total: 0, Types: []alloc.TypeConfig{ok}}, "Total 0"},
		{"no types", alloc.Config{Total: 2}, "Types is empty"},
		{"zero min", alloc.Config{Total: 2, Types: []alloc.TypeConfig{{Name: "a", TolerableDelay: time.Second}}}, "Min 0"},
		{"no delay", alloc.Config{Total: 2, Types: []alloc.TypeConfig{{Name: "a", Min: 1}}}, "TolerableDelay"},
		{"dup", alloc.Config{Total: 2, Types: []alloc.TypeConfig{ok, ok}}, "twice"},
		{"mins too big", alloc.Config{Total: 1, Types: []alloc.TypeConfig{ok, {Name: "b", Min: 1, TolerableDelay: 1}}}, "add up to 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestAcquireReleaseAndLimits(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	a, err := alloc.New(alloc.Config{Total: 3, Clock: clk, Types: []alloc.TypeConfig{
		{Name: "a", Min: 1, TolerableDelay: time.Second},
		{Name: "b", Min: 1, TolerableDelay: time.Second},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Initial limits: mins plus the extra slot spread: a 2, b 1.
	s := a.Snapshot()
	if la, _ := s.Type("a"); la.Limit != 2 {
		t.Fatalf("initial limit of a = %d, want 2", la.Limit)
	}
	t1, _ := a.Enqueue("a")
	t2, _ := a.Enqueue("a")
	t3, _ := a.Enqueue("a") // over a's limit: waits although one slot is free (b's)
	if !t1.Granted() || !t2.Granted() || t3.Granted() {
		t.Fatalf("granted %v %v %v, want true true false", t1.Granted(), t2.Granted(), t3.Granted())
	}
	tb, _ := a.Enqueue("b")
	if !tb.Granted() {
		t.Fatal("b's minimum slot was not available")
	}
	clk.Advance(100 * time.Millisecond)
	t1.Release()
	if !t3.Granted() || t3.Wait() != 100*time.Millisecond {
		t.Fatalf("after a release: t3 granted %v after %v, want true after 100ms", t3.Granted(), t3.Wait())
	}
	t1.Release() // twice is harmless
	if s := a.Snapshot(); s.InUse != 3 {
		t.Fatalf("in use %d, want 3", s.InUse)
	}
	if _, err := a.Enqueue("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown type: %v", err)
	}
	// Acquire honours ctx while waiting and withdraws the ticket.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := a.Acquire(ctx, "b"); err == nil {
		t.Fatal("Acquire on a full allocator returned without a slot")
	}
	if tb2, _ := a.Snapshot().Type("b"); tb2.Waiting != 0 {
		t.Fatalf("a cancelled Acquire left %d waiting", tb2.Waiting)
	}
}
