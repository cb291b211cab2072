package sched

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

// TestFeedDropsLaggingSubscriber: a subscriber that reads nothing gets FeedBuffer
// events and then its channel closed (it must resync); others are not held back; after
// close, a new subscription ends at once.
func TestFeedDropsLaggingSubscriber(t *testing.T) {
	f := newFeed()
	slow, cancelSlow := f.Subscribe()
	defer cancelSlow()
	fast, cancelFast := f.Subscribe()
	defer cancelFast()
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			f.publish(store.Task{ID: fmt.Sprint("t", i), Type: "x", State: store.Queued, Payload: []byte("secret payload"), CreatedAt: time.Now()})
		}
	}
	read := func(n int) {
		for i := 0; i < n; i++ {
			if _, ok := <-fast; !ok {
				t.Fatalf("the reading subscriber was dropped after %d events", i)
			}
		}
	}
	publish(0, FeedBuffer) // both buffers full
	read(FeedBuffer)
	publish(FeedBuffer, FeedBuffer+10) // slow is dropped; fast is not
	read(10)
	n := 0
	for ev := range slow {
		if n == 0 && (ev.Name != "task" || !strings.Contains(string(ev.Data), `"t0"`) || strings.Contains(string(ev.Data), "payload")) {
			t.Errorf("first event %s %s: want task t0 without its payload", ev.Name, ev.Data)
		}
		n++
	}
	if n != FeedBuffer {
		t.Errorf("the lagging subscriber got %d events before its channel closed, want %d", n, FeedBuffer)
	}
	f.close()
	ch, cancel := f.Subscribe()
	defer cancel()
	if _, ok := <-ch; ok {
		t.Error("a subscription after close got an event")
	}
}
