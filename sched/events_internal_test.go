package sched

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/paddockvm/paddock/sched/store"
)

// TestFeedDropsLaggingSubscriber: a subscriber that reads nothing gets FeedBuffer
// events and then its channel closed (it must resync); others are not held back; after
// close, a new subscription ends at once.
func TestFeedDropsLaggingSubscriber(t *testing.T) {
	f := newFeed()
	slow, cancelSlow, _ := f.Subscribe()
	defer cancelSlow()
	fast, cancelFast, _ := f.Subscribe()
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
	ch, cancel, _ := f.Subscribe()
	defer cancel()
	if _, ok := <-ch; ok {
		t.Error("a subscription after close got an event")
	}
}

// TestFeedSubscribersBounded: a tenant holds at most MaxFeedSubscribers subscriptions
// (the admins together as many); one more is refused naming the limit, another
// tenant's are not affected, and a cancelled one makes room — also one the feed dropped
// for lagging.
func TestFeedSubscribersBounded(t *testing.T) {
	f := newFeed()
	var cancels []func()
	for i := 0; i < MaxFeedSubscribers; i++ {
		_, cancel, err := f.subscribe("a")
		if err != nil {
			t.Fatalf("subscription %d of %d: %v", i+1, MaxFeedSubscribers, err)
		}
		cancels = append(cancels, cancel)
	}
	if _, _, err := f.subscribe("a"); err == nil || !strings.Contains(err.Error(), "sched.MaxFeedSubscribers") {
		t.Fatalf("subscription %d of tenant a: %v; want refused naming sched.MaxFeedSubscribers", MaxFeedSubscribers+1, err)
	}
	_, cancelB, err := f.subscribe("b")
	if err != nil {
		t.Fatalf("tenant b refused while a is at its limit: %v", err)
	}
	for i := 0; i < FeedBuffer+1; i++ { // every subscriber of a lags: dropped, still counted until cancelled
		f.publish(store.Task{ID: fmt.Sprint("t", i), Tenant: "a", Type: "x", State: store.Queued})
	}
	if _, _, err := f.subscribe("a"); err == nil {
		t.Fatal("a dropped subscription no one cancelled made room")
	}
	cancels[0]()
	cancels[0]() // twice: counted once
	if _, cancel, err := f.subscribe("a"); err != nil {
		t.Fatalf("after a cancel: %v", err)
	} else {
		cancel()
	}
	for _, c := range append(cancels[1:], cancelB) {
		c()
	}
	if len(f.per) != 0 {
		t.Fatalf("counts left after every cancel: %v", f.per)
	}
}

// BenchmarkFeedPublish: the cost of one task change for the console's feed, with 0, 1
// and 10 subscribers reading (0 is every change on a server nobody watches).
//
//	CGO_ENABLED=0 go test -run '^$' -bench FeedPublish ./sched
func BenchmarkFeedPublish(b *testing.B) {
	tk := store.Task{ID: "01a2324e-4615-79f7-abbd-25d20a02bbeb", Type: "checksum.sha256", State: store.Running, Attempt: 1,
		AgentID: "agent-1", LeaseID: 7, Tenant: "default", Class: store.Batch, Priority: 0, MaxAttempts: 3, Timeout: time.Minute,
		CreatedAt: time.Now(), UpdatedAt: time.Now(), LeasedAt: time.Now(), StartedAt: time.Now()}
	for _, subs := range []int{0, 1, 10} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			f := newFeed()
			done := make(chan struct{})
			for range subs {
				ch, cancel, _ := f.Subscribe()
				defer cancel()
				go func() {
					for {
						select {
						case <-ch:
						case <-done:
							return
						}
					}
				}()
			}
			defer close(done)
			b.ReportAllocs()
			for b.Loop() {
				f.publish(tk)
			}
		})
	}
}

// BenchmarkFeedMarshal: the JSON of one event alone (most of a publish with subscribers).
func BenchmarkFeedMarshal(b *testing.B) {
	tk := store.Task{ID: "01a2324e-4615-79f7-abbd-25d20a02bbeb", Type: "checksum.sha256", State: store.Running, Attempt: 1,
		AgentID: "agent-1", LeaseID: 7, Tenant: "default", Class: store.Batch, MaxAttempts: 3, Timeout: time.Minute, CreatedAt: time.Now()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protojson.Marshal(listForm(tk)); err != nil {
			b.Fatal(err)
		}
	}
}

// sharedStore is a store.Shared with nothing else (observe only looks at the type).
type sharedStore struct{ store.Store }

func (sharedStore) Wakeups(context.Context) <-chan store.Wakeup { return nil }

// TestObserveKeepsShared: the feed's wrapper keeps a shared store's Wakeups visible
// (the replicas' wake-up loop asserts store.Shared), and adds none to a store without.
func TestObserveKeepsShared(t *testing.T) {
	if _, ok := observe(sharedStore{}, nil).(store.Shared); !ok {
		t.Error("observe hides store.Shared: replicas would get no wake-ups")
	}
	if _, ok := observe(struct{ store.Store }{}, nil).(store.Shared); ok {
		t.Error("observe makes a store that is not shared look shared")
	}
}
