package sched_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/stream"
)

// rawStream opens a stream on ts by hand (no Go client) and returns it with the
// server's StreamOpened.
func rawStream(t *testing.T, ts *testServer, open *paddockv1.StreamOpen) (*connect.BidiStreamForClient[paddockv1.StreamRequest, paddockv1.StreamResponse], *paddockv1.StreamOpened) {
	t.Helper()
	bs := streamClient(ts).Stream(context.Background())
	t.Cleanup(func() { _ = bs.CloseResponse() })
	if err := bs.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: open}}); err != nil {
		t.Fatal(err)
	}
	m, err := bs.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if m.GetOpened() == nil {
		t.Fatalf("first response %v, want StreamOpened", m)
	}
	return bs, m.GetOpened()
}

func itemsMsg(ps ...[]byte) *paddockv1.StreamRequest {
	its := make([]*paddockv1.StreamItem, len(ps))
	for i, p := range ps {
		its[i] = &paddockv1.StreamItem{Payload: p}
	}
	return &paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Items{Items: &paddockv1.StreamItems{Items: its}}}
}

func itemMsg(p []byte) *paddockv1.StreamRequest {
	return &paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Item{Item: &paddockv1.StreamItem{Payload: p}}}
}

// TestStreamBatchedItems: items sent several to a message (StreamItems) and one each
// (StreamItem), mixed in one stream, run once each and come back in submission order;
// meanwhile an old-style client (single items, single results, no batch_results) and a
// Go client (stream.Client, which batches) run their own streams on the same server
// and agent. Both a transient and a durable stream.
func TestStreamBatchedItems(t *testing.T) {
	ts := startServer(t, fastConfig())
	startRealAgent(t, ts.agentAddr, "b1", "")
	for _, transient := range []bool{true, false} {
		t.Run(map[bool]string{true: "transient", false: "durable"}[transient], func(t *testing.T) {
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // the old client: one StreamItem, one StreamResult each
				defer wg.Done()
				bs, op := rawStream(t, ts, &paddockv1.StreamOpen{Type: "test.echo", Window: 4, Transient: transient})
				if !op.GetBatchItems() {
					t.Errorf("opened %v: want batch_items (this server takes StreamItems)", op)
				}
				const n = 40
				go func() {
					for i := range n {
						if err := bs.Send(itemMsg([]byte(fmt.Sprint("old-", i)))); err != nil {
							t.Errorf("old client, item %d: %v", i, err)
							return
						}
					}
					_ = bs.CloseRequest()
				}()
				for i := range n {
					m, err := bs.Receive()
					if err != nil {
						t.Errorf("old client, result %d: %v", i, err)
						return
					}
					if r := m.GetResult(); r == nil || r.GetSeq() != uint64(i) || string(r.GetOutput()) != fmt.Sprint("old-", i) {
						t.Errorf("old client, result %d: %v (want a single StreamResult: it did not ask for batch_results)", i, m)
						return
					}
				}
				if _, err := bs.Receive(); !errors.Is(err, io.EOF) {
					t.Errorf("old client, after %d results: %v, want the end", n, err)
				}
			}()

			// This client: batches and single items mixed, the window full at times.
			bs, op := rawStream(t, ts, &paddockv1.StreamOpen{Type: "test.echo", Window: 8, Transient: transient, BatchResults: true})
			var sizes = []int{8, 1, 3, 1, 1, 5, 8, 2}
			n := 0
			for _, k := range sizes {
				n += k
			}
			go func() {
				seq := 0
				for _, k := range sizes {
					var m *paddockv1.StreamRequest
					if k == 1 {
						m = itemMsg([]byte(fmt.Sprint("new-", seq)))
					} else {
						ps := make([][]byte, k)
						for i := range ps {
							ps[i] = []byte(fmt.Sprint("new-", seq+i))
						}
						m = itemsMsg(ps...)
					}
					seq += k
					if err := bs.Send(m); err != nil {
						t.Errorf("sending %d items: %v", k, err)
						return
					}
				}
				_ = bs.CloseRequest()
			}()
			for got := 0; got < n; {
				m, err := bs.Receive()
				if err != nil {
					t.Fatalf("result %d of %d (window %d): %v", got, n, op.GetWindow(), err)
				}
				rs := m.GetResults().GetResults()
				if m.GetResult() != nil {
					rs = append(rs, m.GetResult())
				}
				if len(rs) == 0 {
					t.Fatalf("response %v: want results", m)
				}
				for _, r := range rs {
					if r.GetSeq() != uint64(got) || r.GetState() != paddockv1.State_STATE_SUCCEEDED || string(r.GetOutput()) != fmt.Sprint("new-", got) {
						t.Fatalf("result %d: seq %d state %v output %q error %q", got, r.GetSeq(), r.GetState(), r.GetOutput(), r.GetError())
					}
					got++
				}
			}
			if m, err := bs.Receive(); !errors.Is(err, io.EOF) {
				t.Fatalf("after %d results: %v, %v; want the end (each exactly once)", n, m, err)
			}
			// The Go client, while the old client may still run.
			c, err := stream.Open(context.Background(), streamClient(ts), "", &paddockv1.StreamOpen{Type: "test.echo", Window: 64, Transient: transient})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			runStream(t, c, 500, 0, nil)
			wg.Wait()
			for _, si := range ts.srv.Streams() {
				if si.MaxOutstanding > uint64(si.Window) {
					t.Fatalf("stream %s: %d outstanding, window %d", si.ID, si.MaxOutstanding, si.Window)
				}
			}
		})
	}
}

// TestStreamBadBatch: an empty StreamItems, one over the stream's window, an absurd
// one, one with a payload over the inline limit, and a second StreamOpen are each
// refused with InvalidArgument naming the field and what to do.
func TestStreamBadBatch(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxInlineBytes = 1 << 10
	ts := startServer(t, cfg)
	many := make([][]byte, 100_000)
	for _, tc := range []struct {
		name string
		msg  *paddockv1.StreamRequest
		want string
	}{
		{"empty", itemsMsg(), "items.items: empty"},
		{"over the window", itemsMsg([]byte("a"), []byte("b"), []byte("c"), []byte("d"), []byte("e")), "items.items: 5 items in one message is over the stream's window of 4: send at most the window at once"},
		{"absurd", itemsMsg(many...), "items.items: 100000 items in one message is over the stream's window of 4"},
		{"payload over the inline limit", itemsMsg([]byte("a"), bytes.Repeat([]byte("x"), 2<<10)), "items.items[1].payload: 2048 bytes is over the server's inline limit of 1024 bytes (server.max_inline_bytes)"},
		{"second open", &paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: &paddockv1.StreamOpen{Type: "test.echo", Window: 4}}}, "open: a second StreamOpen"},
		{"neither", &paddockv1.StreamRequest{}, "item: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs, _ := rawStream(t, ts, &paddockv1.StreamOpen{Type: "test.echo", Window: 4, Transient: true})
			_ = bs.Send(tc.msg)
			_, err := bs.Receive()
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want InvalidArgument naming %q", err, tc.want)
			}
		})
	}
}
