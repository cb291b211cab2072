package stream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

// Client is one open ordered stream, on the client side. Send and Recv may be called
// from two goroutines (one each); Send blocks while the window is full, so a caller
// that sends everything before receiving must receive in another goroutine.
//
// Send queues its item for the client's writer goroutine, which sends at once what is
// queued: a lone item goes out as soon as it is sent, and the items sent while the
// writer is busy with a message go out together in its next one (one StreamItems, when
// the server takes them: StreamOpened.batch_items). Nothing waits to fill a batch.
type Client struct {
	st      *connect.BidiStreamForClient[paddockv1.StreamRequest, paddockv1.StreamResponse]
	opened  *paddockv1.StreamOpened
	credits chan struct{} // one token per outstanding item

	// mu guards the fields below; the writer alone sends on the stream.
	mu      sync.Mutex
	sent    uint64   // items queued so far: the next item's seq
	queue   [][]byte // queued, not yet handed to the writer
	closing bool     // CloseSend was called: the writer closes the send side once queue is sent
	sendErr error    // the writer's error: the stream's send side is broken
	wake    chan struct{}
	// writerDone is closed when the writer has returned (after closing the send side).
	writerDone chan struct{}
	cancel     context.CancelFunc // the stream's context
	// Recv's goroutine only: the seq Recv expects next, and the results of a
	// StreamResults not yet returned.
	next    uint64
	pending []*paddockv1.StreamResult
}

// Open opens a stream on tc (a TaskService client; streams opened on one client share
// its HTTP/2 connections) with the given open message. token, when not empty, is sent
// as the bearer token. It returns once the server has answered with StreamOpened. The
// client asks for batched results (StreamOpen.batch_results) whatever open says: Recv
// returns them one by one.
func Open(ctx context.Context, tc paddockv1connect.TaskServiceClient, token string, open *paddockv1.StreamOpen) (*Client, error) {
	if w := open.GetWindow(); w == 0 {
		return nil, errors.New("stream: window is 0: give the most items outstanding at once (1..4096)")
	}
	open = proto.CloneOf(open)
	open.BatchResults = true
	ctx, cancel := context.WithCancel(ctx) // Close cancels: a writer blocked sending returns
	st := tc.Stream(ctx)
	if token != "" {
		st.RequestHeader().Set("Authorization", "Bearer "+token)
	}
	if err := st.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: open}}); err != nil {
		defer cancel()
		return nil, openErr(st, err)
	}
	first, err := st.Receive()
	if err != nil {
		_ = st.CloseRequest()
		cancel()
		return nil, fmt.Errorf("opening a %s stream: %w", open.GetType(), err)
	}
	op := first.GetOpened()
	if op == nil {
		_ = st.CloseRequest()
		cancel()
		return nil, fmt.Errorf("opening a %s stream: the server answered %T, not StreamOpened", open.GetType(), first.GetMsg())
	}
	c := &Client{st: st, opened: op, cancel: cancel, credits: make(chan struct{}, op.GetWindow()), wake: make(chan struct{}, 1), writerDone: make(chan struct{})}
	go c.writer()
	return c, nil
}

// Bounds of one StreamItems: items (the window bounds it too), and payload bytes
// (one item may pass it alone), well under the server's request limit.
const (
	maxItemsBatch      = 256
	maxItemsBatchBytes = 512 << 10
)

// writer sends the queued items, as batches when the server takes them, until CloseSend
// (then it closes the send side) or an error (kept in sendErr for Send and CloseSend).
func (c *Client) writer() {
	defer close(c.writerDone)
	var spare [][]byte
	for range c.wake {
		c.mu.Lock()
		q, closing := c.queue, c.closing
		c.queue = spare[:0]
		c.mu.Unlock()
		err := c.sendItems(q)
		clear(q)
		spare = q
		if err == nil && closing {
			c.mu.Lock()
			done := len(c.queue) == 0
			c.mu.Unlock()
			if !done {
				continue // queued before CloseSend; wake is set again
			}
			err = c.st.CloseRequest()
			if err == nil {
				return
			}
		}
		if err != nil {
			c.mu.Lock()
			c.sendErr = err
			c.mu.Unlock()
			return
		}
	}
}

// sendItems sends payloads q, in order, in as few messages as the bounds allow.
func (c *Client) sendItems(q [][]byte) error {
	for len(q) > 0 {
		m, n := nextMessage(q, c.opened.GetBatchItems(), int(c.opened.GetWindow()))
		if err := c.st.Send(m); err != nil {
			return fmt.Errorf("sending %d items: %w", n, err)
		}
		q = q[n:]
	}
	return nil
}

// nextMessage returns the message that sends the first items of q (len(q) > 0) and how
// many it holds: one StreamItem, or when the server takes batches (batch) a StreamItems
// of as many as fit in maxItemsBatch, maxItemsBatchBytes and the window.
func nextMessage(q [][]byte, batch bool, window int) (*paddockv1.StreamRequest, int) {
	n, size := 1, len(q[0])
	for batch && n < len(q) && n < maxItemsBatch && n < window && size+len(q[n]) <= maxItemsBatchBytes {
		size += len(q[n])
		n++
	}
	if n == 1 {
		return &paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Item{Item: &paddockv1.StreamItem{Payload: q[0]}}}, 1
	}
	its := make([]*paddockv1.StreamItem, n)
	for i := range its {
		its[i] = &paddockv1.StreamItem{Payload: q[i]}
	}
	return &paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Items{Items: &paddockv1.StreamItems{Items: its}}}, n
}

// poke wakes the writer (it takes everything queued when it runs).
func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// openErr is the error of a failed first Send: the server's, when it sent one.
func openErr(st *connect.BidiStreamForClient[paddockv1.StreamRequest, paddockv1.StreamResponse], err error) error {
	if _, rerr := st.Receive(); rerr != nil {
		err = rerr
	}
	_ = st.CloseRequest()
	return fmt.Errorf("opening a stream: %w", err)
}

// Opened is the server's answer to the open: the stream's id, its window, whether it
// is durable, and a notice to show the user (a transient stream's loss on restart).
func (c *Client) Opened() *paddockv1.StreamOpened { return c.opened }

// Send queues one payload for sending and returns its seq. It blocks while the window
// is full (until Recv has received a result) or until ctx is done. The payload must not
// be changed afterwards. A failure to send an item queued earlier is returned by the
// next Send or CloseSend (and Recv sees the stream end).
func (c *Client) Send(ctx context.Context, payload []byte) (uint64, error) {
	select {
	case c.credits <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c.mu.Lock()
	switch {
	case c.sendErr != nil:
		err := c.sendErr
		c.mu.Unlock()
		<-c.credits
		return 0, fmt.Errorf("stream %s: %w", c.opened.GetStreamId(), err)
	case c.closing:
		c.mu.Unlock()
		<-c.credits
		return 0, fmt.Errorf("stream %s: Send after CloseSend", c.opened.GetStreamId())
	}
	seq := c.sent
	c.sent++
	c.queue = append(c.queue, payload)
	c.mu.Unlock()
	c.poke()
	return seq, nil
}

// CloseSend says no more items follow, once the items queued are sent; results still
// arrive. It returns the first error sending them, if any.
func (c *Client) CloseSend() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.poke()
	<-c.writerDone
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sendErr != nil {
		return fmt.Errorf("stream %s: %w", c.opened.GetStreamId(), c.sendErr)
	}
	return nil
}

// Recv returns the next result, in submission order. It checks the order: a result
// out of order or repeated is an error (the server promises neither happens).
func (c *Client) Recv() (*paddockv1.StreamResult, error) {
	if len(c.pending) == 0 {
		m, err := c.st.Receive()
		if err != nil {
			return nil, err
		}
		switch {
		case m.GetResult() != nil:
			c.pending = append(c.pending[:0], m.GetResult())
		case len(m.GetResults().GetResults()) > 0:
			c.pending = m.GetResults().GetResults()
		default:
			return nil, fmt.Errorf("stream %s: expected a result, got %T", c.opened.GetStreamId(), m.GetMsg())
		}
	}
	r := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	if r.GetSeq() != c.next {
		return nil, fmt.Errorf("stream %s: result for item %d arrived when item %d was next (out of order or repeated)", c.opened.GetStreamId(), r.GetSeq(), c.next)
	}
	c.next++
	select {
	case <-c.credits:
	default:
		return nil, fmt.Errorf("stream %s: result for item %d, which was never sent", c.opened.GetStreamId(), r.GetSeq())
	}
	return r, nil
}

// Close ends the stream: it closes the send side and the response body. Results not
// received are dropped; items queued and not yet sent may be dropped too.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.poke()
	err := c.st.CloseResponse()
	c.cancel() // a writer blocked in Send (flow control) returns
	<-c.writerDone
	return err
}

// HTTPClient returns an HTTP client for streams: a stream is a bidirectional call, which
// needs HTTP/2, so it speaks HTTP/2 over TLS for https:// URLs and unencrypted HTTP/2
// (h2c, as the server's client port serves it) for http:// URLs. It has no overall
// timeout (a stream lasts as long as it has items); streams opened through one client
// share its connections.
func HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}
