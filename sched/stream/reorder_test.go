package stream

import (
	"math/rand/v2"
	"testing"
)

func TestReorderReleasesInOrderOnce(t *testing.T) {
	const w, n = 16, 10000
	o := NewReorder[uint64](w)
	rng := rand.New(rand.NewPCG(1, 2))
	var running []uint64
	var got []uint64
	admitted := 0
	for len(got) < n {
		// Admit while the window has room, then finish a random running item.
		for admitted < n {
			seq, err := o.Admit()
			if err != nil {
				break
			}
			running = append(running, seq)
			admitted++
		}
		if st := o.Stats(); st.Outstanding > w {
			t.Fatalf("%d outstanding, window %d", st.Outstanding, w)
		}
		i := rng.IntN(len(running))
		seq := running[i]
		running = append(running[:i], running[i+1:]...)
		out, err := o.Done(seq, seq)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, out...)
	}
	for i, s := range got {
		if s != uint64(i) {
			t.Fatalf("released[%d] = %d", i, s)
		}
	}
	if st := o.Stats(); st.MaxOutstanding != w || st.Held != 0 || st.Released != n {
		t.Fatalf("stats %+v", st)
	}
}

func TestReorderRefuses(t *testing.T) {
	o := NewReorder[string](2)
	a, _ := o.Admit()
	b, _ := o.Admit()
	if _, err := o.Admit(); err == nil {
		t.Fatal("admitted past the window")
	}
	if out, err := o.Done(b, "b"); err != nil || len(out) != 0 {
		t.Fatalf("b released before a: %v %v", out, err)
	}
	if _, err := o.Done(b, "b"); err == nil {
		t.Fatal("second result for b accepted")
	}
	if _, err := o.Done(7, "x"); err == nil {
		t.Fatal("result for an item never admitted accepted")
	}
	out, err := o.Done(a, "a")
	if err != nil || len(out) != 2 || out[0] != "a" || out[1] != "b" {
		t.Fatalf("got %v %v", out, err)
	}
	if _, err := o.Done(a, "a"); err == nil {
		t.Fatal("result for a released item accepted")
	}
}
