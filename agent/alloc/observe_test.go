package alloc_test

import (
	"errors"
	"testing"
	"time"

	"github.com/paddockvm/paddock/agent/alloc"
)

// TestObserveDrivesRebalance: with no waiters of its own (tasks queue on the
// server), the allocator gives the extra slots to the type whose observed delay is
// furthest above its tolerable delay, keeps every type at its minimum, and forgets
// the observations after the cycle.
func TestObserveDrivesRebalance(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	a, err := alloc.New(alloc.Config{Total: 6, Clock: clk, Types: []alloc.TypeConfig{
		{Name: "loose", Min: 1, TolerableDelay: time.Second},
		{Name: "tight", Min: 2, TolerableDelay: 100 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                 string
		loose, tight         time.Duration
		looseWait, tightWait int
		wantLoose, wantTight int
	}{
		// 500ms is 0.5x loose's tolerance, 5x tight's: tight gets every extra slot.
		{"tight over", 500 * time.Millisecond, 500 * time.Millisecond, 100, 100, 1, 5},
		// 3s is 3x loose's tolerance; 20ms is under tight's: loose gets every extra
		// slot, tight keeps its minimum.
		{"loose over", 3 * time.Second, 20 * time.Millisecond, 100, 100, 4, 2},
		// Only 1 loose task waits: it cannot use more than 1 slot, the rest go to tight.
		{"loose small backlog", 3 * time.Second, 20 * time.Millisecond, 1, 100, 1, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Observe("loose", tc.loose, tc.looseWait); err != nil {
				t.Fatal(err)
			}
			if err := a.Observe("tight", tc.tight, tc.tightWait); err != nil {
				t.Fatal(err)
			}
			s := a.Rebalance()
			l, _ := s.Type("loose")
			ti, _ := s.Type("tight")
			if l.Limit != tc.wantLoose || ti.Limit != tc.wantTight {
				t.Fatalf("limits loose %d tight %d, want %d %d (%+v)", l.Limit, ti.Limit, tc.wantLoose, tc.wantTight, s)
			}
			if l.Delay != tc.loose || ti.Delay != tc.tight {
				t.Fatalf("delays used: loose %v tight %v, want the observed %v %v", l.Delay, ti.Delay, tc.loose, tc.tight)
			}
		})
	}
	// Nothing observed in the next cycle: no delay, no demand; extras spread tightest first.
	s := a.Rebalance()
	if l, _ := s.Type("loose"); l.Delay != 0 || l.Limit < 1 {
		t.Fatalf("after a quiet cycle loose has delay %v limit %d", l.Delay, l.Limit)
	}
	if err := a.Observe("nope", time.Second, 1); !errors.Is(err, alloc.ErrUnknownType) {
		t.Fatalf("Observe of an unknown type: %v", err)
	}
}

// TestAdmitBorrowsIdleSlotsButNeverPastTotal: Admit grants within the limit, then
// borrows idle slots of the total, and refuses only when all are busy.
func TestAdmitBorrowsIdleSlotsButNeverPastTotal(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	a, err := alloc.New(alloc.Config{Total: 3, Clock: clk, Types: []alloc.TypeConfig{
		{Name: "a", Min: 1, TolerableDelay: time.Second},
		{Name: "b", Min: 1, TolerableDelay: time.Second},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var ts []*alloc.Ticket
	for i := 0; i < 3; i++ { // a's limit is 2: the third borrows b's idle slot
		tk, err := a.Admit("a")
		if err != nil {
			t.Fatalf("admit %d: %v", i, err)
		}
		ts = append(ts, tk)
	}
	if _, err := a.Admit("b"); !errors.Is(err, alloc.ErrFull) {
		t.Fatalf("admit with all 3 slots busy: %v, want ErrFull", err)
	}
	s := a.Snapshot()
	if sa, _ := s.Type("a"); sa.Running != 3 || s.InUse != 3 {
		t.Fatalf("running a %d, in use %d; want 3, 3", sa.Running, s.InUse)
	}
	// A waiting Enqueue of b is granted only once a slot frees and b is under its limit.
	w, _ := a.Enqueue("b")
	ts[0].Release()
	if !w.Granted() {
		t.Fatal("b's ticket not granted after a slot freed")
	}
	if _, err := a.Admit("zzz"); !errors.Is(err, alloc.ErrUnknownType) {
		t.Fatalf("admit of an unknown type: %v", err)
	}
}
