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
type Client struct {
	st      *connect.BidiStreamForClient[paddockv1.StreamRequest, paddockv1.StreamResponse]
	opened  *paddockv1.StreamOpened
	credits chan struct{} // one token per outstanding item

	sendMu sync.Mutex // guards sent and the stream's send side
	sent   uint64
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
	st := tc.Stream(ctx)
	if token != "" {
		st.RequestHeader().Set("Authorization", "Bearer "+token)
	}
	if err := st.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Open{Open: open}}); err != nil {
		return nil, openErr(st, err)
	}
	first, err := st.Receive()
	if err != nil {
		_ = st.CloseRequest()
		return nil, fmt.Errorf("opening a %s stream: %w", open.GetType(), err)
	}
	op := first.GetOpened()
	if op == nil {
		_ = st.CloseRequest()
		return nil, fmt.Errorf("opening a %s stream: the server answered %T, not StreamOpened", open.GetType(), first.GetMsg())
	}
	c := &Client{st: st, opened: op, credits: make(chan struct{}, op.GetWindow())}
	return c, nil
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

// Send sends one payload and returns its seq. It blocks while the window is full
// (until Recv has received a result) or until ctx is done.
func (c *Client) Send(ctx context.Context, payload []byte) (uint64, error) {
	select {
	case c.credits <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := c.st.Send(&paddockv1.StreamRequest{Msg: &paddockv1.StreamRequest_Item{Item: &paddockv1.StreamItem{Payload: payload}}}); err != nil {
		<-c.credits
		return 0, fmt.Errorf("sending item %d: %w", c.sent, err)
	}
	c.sent++
	return c.sent - 1, nil
}

// CloseSend says no more items follow; results still arrive.
func (c *Client) CloseSend() error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.st.CloseRequest()
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
// received are dropped.
func (c *Client) Close() error {
	_ = c.CloseSend()
	return c.st.CloseResponse()
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
