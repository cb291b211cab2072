package sdk

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// batchStream is a HandleBatch server stream in memory: Send passes each message on.
type batchStream struct {
	grpc.ServerStream // nil: only Context and Send are used
	ctx               context.Context
	msgs              chan *handlerpb.HandleBatchResponse
}

func (s *batchStream) Context() context.Context { return s.ctx }
func (s *batchStream) Send(m *handlerpb.HandleBatchResponse) error {
	s.msgs <- m
	return nil
}

// limitHandler serves type "t" with a declared concurrency and counts the calls that
// run at once. Payload "fail" fails; "wait" waits for its ctx.
type limitHandler struct {
	concurrency   int
	running, peak atomic.Int64
}

func (h *limitHandler) Describe() []TaskType {
	return []TaskType{{Name: "t", Version: "1", Concurrency: h.concurrency}}
}

func (h *limitHandler) Handle(ctx context.Context, r Request) (Response, error) {
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	switch string(r.Payload) {
	case "fail":
		return Response{}, Fatalf("failed as asked")
	case "wait":
		<-ctx.Done()
		return Response{}, ctx.Err()
	}
	time.Sleep(5 * time.Millisecond) // long enough for the workers to overlap
	return Response{Output: r.Payload}, nil
}

// TestHandleBatch: every item gets one answer, at its index, with its own outcome; no
// more items run at once than the type's concurrency; CancelCall ends one item alone;
// an item past its deadline_unix_nanos ends.
func TestHandleBatch(t *testing.T) {
	h := &limitHandler{concurrency: 3}
	s, err := newServer(h)
	if err != nil {
		t.Fatal(err)
	}
	var items []*handlerpb.HandleRequest
	for i := range 20 {
		items = append(items, &handlerpb.HandleRequest{CallId: fmt.Sprint("c", i), Type: "t", Payload: []byte(fmt.Sprint("p", i))})
	}
	items[4].Payload = []byte("fail")
	items[7].Payload = []byte("wait")
	items[9].Payload = []byte("wait")
	items[9].DeadlineUnixNanos = time.Now().Add(100 * time.Millisecond).UnixNano()
	items = append(items, &handlerpb.HandleRequest{CallId: "u", Type: "nosuch"})
	st := &batchStream{ctx: context.Background(), msgs: make(chan *handlerpb.HandleBatchResponse, len(items))}
	errc := make(chan error, 1)
	go func() { errc <- s.HandleBatch(&handlerpb.HandleBatchRequest{Items: items}, st) }()

	got := map[int]*handlerpb.HandleResponse{}
	var mu sync.Mutex
	collect := func(want int) {
		t.Helper()
		for len(got) < want {
			select {
			case m := <-st.msgs:
				for _, a := range m.GetAnswers() {
					mu.Lock()
					if _, dup := got[int(a.GetIndex())]; dup {
						t.Fatalf("item %d answered twice", a.GetIndex())
					}
					got[int(a.GetIndex())] = a.GetResponse()
					mu.Unlock()
				}
			case <-time.After(time.Minute):
				t.Fatalf("%d answers after a minute, want %d", len(got), want)
			}
		}
	}
	collect(len(items) - 1) // all but the item waiting for its cancel
	if _, ok := got[7]; ok {
		t.Fatal("item 7 answered before it was cancelled")
	}
	if resp, err := s.CancelCall(context.Background(), &handlerpb.CancelCallRequest{CallId: "c7"}); err != nil || !resp.GetWasRunning() {
		t.Fatalf("CancelCall c7: %v, %v: want was_running", resp, err)
	}
	collect(len(items))
	if err := <-errc; err != nil {
		t.Fatalf("HandleBatch: %v", err)
	}
	for i := range 20 {
		r := got[i]
		switch i {
		case 4:
			if r.GetError().GetMessage() != "failed as asked" || r.GetError().GetRetryable() {
				t.Errorf("item 4: %v, want its fatal error", r)
			}
		case 7, 9:
			if r.GetError() == nil || !r.GetError().GetRetryable() {
				t.Errorf("item %d: %v, want a retryable error (its context ended)", i, r)
			}
		default:
			if r.GetError() != nil || string(r.GetOutput()) != fmt.Sprint("p", i) || r.GetUsage().GetWallNanos() == 0 {
				t.Errorf("item %d: %v, want output p%d with its usage", i, r, i)
			}
		}
	}
	if k := got[20].GetError().GetKind(); k != handlerpb.ErrorKind_ERROR_KIND_UNKNOWN_TYPE {
		t.Errorf("unknown type item: kind %v", k)
	}
	if p := h.peak.Load(); p > 3 {
		t.Errorf("%d items ran at once, more than the type's concurrency of 3", p)
	}
	if resp, _ := s.CancelCall(context.Background(), &handlerpb.CancelCallRequest{CallId: "c7"}); resp.GetWasRunning() {
		t.Error("CancelCall of a finished call says it was running")
	}
}

// TestHandleBatchEmpty: a batch without items is refused, naming the field.
func TestHandleBatchEmpty(t *testing.T) {
	s, err := newServer(&limitHandler{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.HandleBatch(&handlerpb.HandleBatchRequest{}, &batchStream{ctx: context.Background()})
	if err == nil || !strings.Contains(err.Error(), "items") {
		t.Fatalf("empty batch: %v, want an error naming items", err)
	}
}

// typesHandler serves "one" (concurrency 1) and "many" (concurrency 4). A "many"
// call waits until two of them run at once (or 10 s); a "one" call with payload
// "wait" waits for its ctx. It records the payloads it was called with.
type typesHandler struct {
	mu            sync.Mutex
	seen          []string
	one, manyRuns atomic.Int64
	onePeak       atomic.Int64
	manyMet       chan struct{}
	metOnce       sync.Once
}

func (h *typesHandler) Describe() []TaskType {
	return []TaskType{{Name: "one", Version: "1", Concurrency: 1}, {Name: "many", Version: "1", Concurrency: 4}}
}

func (h *typesHandler) Handle(ctx context.Context, r Request) (Response, error) {
	h.mu.Lock()
	h.seen = append(h.seen, string(r.Payload))
	h.mu.Unlock()
	if r.Type == "many" {
		if h.manyRuns.Add(1) >= 2 {
			h.metOnce.Do(func() { close(h.manyMet) })
		}
		defer h.manyRuns.Add(-1)
		select {
		case <-h.manyMet:
			return Response{Output: r.Payload}, nil
		case <-time.After(10 * time.Second):
			return Response{}, Fatalf("no other %q call ran beside this one", r.Type)
		}
	}
	n := h.one.Add(1)
	defer h.one.Add(-1)
	if n > h.onePeak.Load() {
		h.onePeak.Store(n)
	}
	if string(r.Payload) == "wait" {
		<-ctx.Done()
		return Response{}, ctx.Err()
	}
	return Response{Output: r.Payload}, nil
}

// TestHandleBatchTypes: in a batch of two types each type runs up to its own
// concurrency (not the first item's type's); a CancelCall for an item still waiting
// for a worker keeps it from running at all.
func TestHandleBatchTypes(t *testing.T) {
	h := &typesHandler{manyMet: make(chan struct{})}
	s, err := newServer(h)
	if err != nil {
		t.Fatal(err)
	}
	items := []*handlerpb.HandleRequest{
		{CallId: "o0", Type: "one", Payload: []byte("wait")},
		{CallId: "o1", Type: "one", Payload: []byte("o1")},
		{CallId: "o2", Type: "one", Payload: []byte("o2")},
	}
	for i := range 6 {
		items = append(items, &handlerpb.HandleRequest{CallId: fmt.Sprint("m", i), Type: "many", Payload: []byte(fmt.Sprint("m", i))})
	}
	st := &batchStream{ctx: context.Background(), msgs: make(chan *handlerpb.HandleBatchResponse, len(items))}
	errc := make(chan error, 1)
	go func() { errc <- s.HandleBatch(&handlerpb.HandleBatchRequest{Items: items}, st) }()

	// o1 waits behind o0: cancel it before it starts, then let o0 end.
	deadline := time.Now().Add(time.Minute)
	for h.one.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if resp, err := s.CancelCall(context.Background(), &handlerpb.CancelCallRequest{CallId: "o1"}); err != nil || !resp.GetWasRunning() {
		t.Fatalf("CancelCall o1 (waiting for a worker): %v, %v: want was_running", resp, err)
	}
	if _, err := s.CancelCall(context.Background(), &handlerpb.CancelCallRequest{CallId: "o0"}); err != nil {
		t.Fatal(err)
	}
	got := map[int]*handlerpb.HandleResponse{}
	for len(got) < len(items) {
		select {
		case m := <-st.msgs:
			for _, a := range m.GetAnswers() {
				got[int(a.GetIndex())] = a.GetResponse()
			}
		case <-time.After(time.Minute):
			t.Fatalf("%d answers after a minute, want %d", len(got), len(items))
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("HandleBatch: %v", err)
	}
	for i, r := range got {
		switch i {
		case 0, 1:
			if r.GetError() == nil || !r.GetError().GetRetryable() {
				t.Errorf("item %d (cancelled): %v, want a retryable error", i, r)
			}
		default:
			if r.GetError() != nil || string(r.GetOutput()) != string(items[i].GetPayload()) {
				t.Errorf("item %d: %v, want output %s", i, r, items[i].GetPayload())
			}
		}
	}
	for _, p := range h.seen {
		if p == "o1" {
			t.Error("item o1 ran although it was cancelled before it started")
		}
	}
	if p := h.onePeak.Load(); p > 1 {
		t.Errorf("%d items of type one (concurrency 1) ran at once", p)
	}
}
