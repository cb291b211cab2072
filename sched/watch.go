package sched

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched/tenant"
)

// WatchTasks implements paddockv1connect.TaskServiceHandler: the list List returns,
// then every change of a matching task from the server's feed (events.go), the same
// feed the web console's /ui/events carries.
//
// It subscribes before it lists, so no change falls between the two; a change that
// the list already shows newer (a lower updated_at) is skipped. With a state filter
// the watch keeps the ids it has shown in that state, so a task that moves out of it
// is sent once more with left set (the feed carries no previous state).
func (api *clientAPI) WatchTasks(ctx context.Context, req *connect.Request[paddockv1.WatchTasksRequest], stream *connect.ServerStream[paddockv1.WatchTasksResponse]) error {
	if _, ok := tenant.From(ctx); !ok { // guard authenticated it (the interceptor sees unary calls only)
		p, err := api.s.authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return connect.NewError(authCode(err), err)
		}
		ctx = tenant.With(ctx, p)
	}
	m := req.Msg
	feedTenant := "" // an admin watches every tenant's tasks; a tenant its own (auth.go)
	if p := caller(ctx); !p.Admin {
		feedTenant = p.Tenant
	}
	events, unsubscribe, err := api.s.feed.subscribe(feedTenant)
	if err != nil {
		return err
	}
	defer unsubscribe()
	first, err := api.List(ctx, connect.NewRequest(&paddockv1.ListRequest{State: m.GetState(), Type: m.GetType(), Tenant: m.GetTenant(), Class: m.GetClass(), Limit: m.GetLimit()}))
	if err != nil {
		return err
	}
	w := newTaskWatch(m, first.Msg.GetTasks())
	if err := stream.Send(&paddockv1.WatchTasksResponse{Snapshot: first.Msg.GetTasks()}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return api.watchEnded(ctx)
			}
			if ev.Name != "task" {
				continue // e.g. "log": new lines of a task's log, not a task change
			}
			var t paddockv1.Task
			if err := protojson.Unmarshal(ev.Data, &t); err != nil {
				return connect.NewError(connect.CodeInternal, fmt.Errorf("reading the task feed: %w", err))
			}
			if out := w.change(&t); out != nil {
				if err := stream.Send(out); err != nil {
					return err
				}
			}
		}
	}
}

// watchEnded is the error that ends a watch whose feed subscription was closed.
func (api *clientAPI) watchEnded(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	f := api.s.feed
	f.mu.Lock()
	stopping := f.closed
	f.mu.Unlock()
	if stopping {
		return connect.NewError(connect.CodeUnavailable, errors.New("the server is stopping; watch again (another replica, or this one once restarted)"))
	}
	return connect.NewError(connect.CodeAborted, fmt.Errorf("this watch fell more than %d task changes behind and was dropped; watch again", FeedBuffer))
}

// taskWatch decides which feed changes one watch sends.
type taskWatch struct {
	req *paddockv1.WatchTasksRequest
	// listed is updated_at of each task in the first list: an older change of one of
	// them (made before the list was read) is not sent.
	listed map[string]int64
	// in holds the ids shown in the filter's state (only with a state filter).
	in map[string]bool
}

func newTaskWatch(req *paddockv1.WatchTasksRequest, first []*paddockv1.Task) *taskWatch {
	w := &taskWatch{req: req, listed: map[string]int64{}, in: map[string]bool{}}
	for _, t := range first {
		w.listed[t.GetId()] = t.GetUpdatedAtUnixMs()
		if req.GetState() != paddockv1.State_STATE_UNSPECIFIED {
			w.in[t.GetId()] = true
		}
	}
	return w
}

// change returns the message for t, or nil when the watch does not send it.
func (w *taskWatch) change(t *paddockv1.Task) *paddockv1.WatchTasksResponse {
	r, spec := w.req, t.GetSpec()
	if (r.GetType() != "" && spec.GetType() != r.GetType()) || (r.GetTenant() != "" && spec.GetTenant() != r.GetTenant()) ||
		(r.GetClass() != paddockv1.Class_CLASS_UNSPECIFIED && spec.GetClass() != r.GetClass()) {
		return nil
	}
	if at, ok := w.listed[t.GetId()]; ok {
		if t.GetUpdatedAtUnixMs() < at {
			return nil
		}
		delete(w.listed, t.GetId()) // changes come in order from here on
	}
	if r.GetState() == paddockv1.State_STATE_UNSPECIFIED {
		return &paddockv1.WatchTasksResponse{Task: t}
	}
	if t.GetState() == r.GetState() {
		w.in[t.GetId()] = true
		return &paddockv1.WatchTasksResponse{Task: t}
	}
	if w.in[t.GetId()] {
		delete(w.in, t.GetId())
		return &paddockv1.WatchTasksResponse{Task: t, Left: true}
	}
	return nil
}
