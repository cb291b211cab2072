package hostd

import (
	"fmt"
	"testing"

	hostv1 "github.com/paddockvm/paddock/api/host/v1"
)

// TestGoneSetNeverDrops: far more news than the old 4096-deep channel held is all
// kept, once per guest, in arrival order; what a broken stream did not send goes back
// ahead of what came since.
func TestGoneSetNeverDrops(t *testing.T) {
	s := newGoneSet()
	const n = 20000
	for i := range n {
		s.put(&hostv1.GuestGone{Name: fmt.Sprintf("g%05d", i), Reason: "first"})
	}
	s.put(&hostv1.GuestGone{Name: "g00000", Reason: "second"}) // the same guest again
	if s.len() != n {
		t.Fatalf("%d waiting, want %d", s.len(), n)
	}
	select {
	case <-s.wake:
	default:
		t.Fatal("no wake token")
	}
	got := s.take()
	if len(got) != n || got[0].GetName() != "g00000" || got[0].GetReason() != "first" || got[n-1].GetName() != fmt.Sprintf("g%05d", n-1) {
		t.Fatalf("took %d, first %v, last %v", len(got), got[0], got[len(got)-1])
	}
	s.put(&hostv1.GuestGone{Name: "late"})
	s.putBack(got[10:]) // sent 10, then the stream broke
	again := s.take()
	if len(again) != n-10+1 || again[0].GetName() != "g00010" || again[len(again)-1].GetName() != "late" {
		t.Fatalf("after putBack: %d, first %v, last %v", len(again), again[0], again[len(again)-1])
	}
	if s.len() != 0 {
		t.Fatalf("%d left after take", s.len())
	}
}
