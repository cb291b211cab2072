package stream

import (
	"bytes"
	"fmt"
	"testing"
)

// TestNextMessage: the items queued go out in order, each exactly once, as single
// StreamItem messages to a server that does not take batches (an older server), and as
// StreamItems bounded by maxItemsBatch, maxItemsBatchBytes and the window otherwise; a
// payload larger than the byte bound goes alone.
func TestNextMessage(t *testing.T) {
	small := func(n int) [][]byte {
		q := make([][]byte, n)
		for i := range q {
			q[i] = []byte(fmt.Sprint("p", i))
		}
		return q
	}
	big := append(small(3), bytes.Repeat([]byte("x"), maxItemsBatchBytes+1))
	big = append(big, small(2)...)
	for _, tc := range []struct {
		name   string
		q      [][]byte
		batch  bool
		window int
		want   []int // items per message
	}{
		{"one item", small(1), true, 256, []int{1}},
		{"old server", small(4), false, 256, []int{1, 1, 1, 1}},
		{"one batch", small(10), true, 256, []int{10}},
		{"the window bounds a batch", small(10), true, 4, []int{4, 4, 2}},
		{"maxItemsBatch bounds a batch", small(maxItemsBatch + 3), true, 4096, []int{maxItemsBatch, 3}},
		{"a payload past the byte bound goes alone", big, true, 256, []int{3, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			var sent [][]byte
			for q := tc.q; len(q) > 0; {
				m, n := nextMessage(q, tc.batch, tc.window)
				got = append(got, n)
				switch {
				case m.GetItem() != nil:
					if n != 1 {
						t.Fatalf("a StreamItem counted as %d items", n)
					}
					sent = append(sent, m.GetItem().GetPayload())
				case len(m.GetItems().GetItems()) == n && n > 1:
					for _, it := range m.GetItems().GetItems() {
						sent = append(sent, it.GetPayload())
					}
				default:
					t.Fatalf("message %v for %d items", m, n)
				}
				q = q[n:]
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("items per message %v, want %v", got, tc.want)
			}
			if len(sent) != len(tc.q) {
				t.Fatalf("sent %d items of %d", len(sent), len(tc.q))
			}
			for i := range sent {
				if !bytes.Equal(sent[i], tc.q[i]) {
					t.Fatalf("item %d: sent %q, want %q (order)", i, sent[i], tc.q[i])
				}
			}
		})
	}
}
