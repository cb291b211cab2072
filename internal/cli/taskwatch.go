package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

// task ls --watch: the list of task ls, kept up to date from the server's WatchTasks
// stream (its feed of task changes; nothing polls).
//
//   - On a terminal the table is redrawn after each change.
//   - Elsewhere (a pipe, a file) the table is printed once, then one row per change.
//   - With --json every message of the stream is one line of JSON: first
//     {"snapshot":[…]} (the tasks listed when the watch began), then {"task":{…}} per
//     change, with "left":true when a task moved out of the --state filter.
//
// Ctrl-C (the command's context) ends it cleanly. A watch the server dropped because
// it fell behind is opened again at once (a fresh list); a server that stops ends it
// with an error.

// watchBackoff is the pause before a dropped watch is opened again.
const watchBackoff = time.Second

// bearerInterceptor adds "Authorization: Bearer tok" to unary and streaming calls.
type bearerInterceptor struct{ tok string }

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(req.Header())
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (b bearerInterceptor) set(h http.Header) {
	if b.tok != "" {
		h.Set("Authorization", "Bearer "+b.tok)
	}
}

// watchTasks runs task ls --watch with the filters of req.
func watchTasks(ctx context.Context, app *App, req *paddockv1.WatchTasksRequest, asJSON bool) error {
	hc, url := serverHTTP(app, 0) // no timeout: the stream lasts until Ctrl-C
	tc, _ := clientsAt(hc, url, app.Cfg.V.GetString("client.token"))
	var v watchView
	if !asJSON {
		v = newTableView(app.Out, isTerminal(app.Out), int(req.GetLimit()))
	}
	for {
		err := watchOnce(ctx, tc, req, v, app.Out)
		switch {
		case ctx.Err() != nil:
			return nil // Ctrl-C
		case connect.CodeOf(err) == connect.CodeAborted:
			fmt.Fprintf(app.Err, "paddock: %v; watching again\n", err)
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchBackoff):
		}
	}
}

// watchView shows a watch: the first list, then each change.
type watchView interface {
	list(ts []*paddockv1.Task) error
	change(t *paddockv1.Task, left bool) error
}

// watchOnce runs one WatchTasks stream to its end, showing it in v (nil: as JSON lines on out).
func watchOnce(ctx context.Context, tc paddockv1connect.TaskServiceClient, req *paddockv1.WatchTasksRequest, v watchView, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := tc.WatchTasks(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	defer st.Close()
	for first := true; st.Receive(); first = false {
		m := st.Msg()
		switch {
		case v == nil:
			b, err := protojson.Marshal(m)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(out, string(b)); err != nil {
				return err
			}
		case first:
			err = v.list(m.GetSnapshot())
		default:
			err = v.change(m.GetTask(), m.GetLeft())
		}
		if err != nil {
			return err
		}
	}
	if err := st.Err(); err != nil {
		return err
	}
	if ctx.Err() == nil {
		return errors.New("the server ended the watch")
	}
	return nil
}

// tableView is the table of task ls, newest first, at most limit rows.
type tableView struct {
	w      io.Writer
	redraw bool // a terminal: clear and draw the whole table on each change
	limit  int
	tasks  []*paddockv1.Task
}

func newTableView(w io.Writer, redraw bool, limit int) *tableView {
	if limit <= 0 {
		limit = 100
	}
	return &tableView{w: w, redraw: redraw, limit: limit}
}

func (v *tableView) list(ts []*paddockv1.Task) error {
	v.tasks = slices.Clone(ts)
	return v.draw(v.tasks, true)
}

func (v *tableView) change(t *paddockv1.Task, left bool) error {
	i := slices.IndexFunc(v.tasks, func(x *paddockv1.Task) bool { return x.GetId() == t.GetId() })
	switch {
	case left && i >= 0:
		v.tasks = slices.Delete(v.tasks, i, i+1)
	case left:
	case i >= 0:
		v.tasks[i] = t
	default:
		v.tasks = append(v.tasks, t)
		slices.SortStableFunc(v.tasks, func(a, b *paddockv1.Task) int { return cmp.Compare(b.GetCreatedAtUnixMs(), a.GetCreatedAtUnixMs()) })
		v.tasks = v.tasks[:min(len(v.tasks), v.limit)]
	}
	if v.redraw {
		return v.draw(v.tasks, true)
	}
	return v.draw([]*paddockv1.Task{t}, false)
}

// draw prints ts as table rows, with the header when header is set (and, on a
// terminal, after clearing the screen).
func (v *tableView) draw(ts []*paddockv1.Task, header bool) error {
	if v.redraw {
		fmt.Fprintf(v.w, "\x1b[H\x1b[2J%d tasks, updated %s (Ctrl-C to stop)\n", len(ts), time.Now().Format(time.TimeOnly))
	}
	tw := tabwriter.NewWriter(v.w, 0, 4, 2, ' ', 0)
	if header {
		fmt.Fprintln(tw, taskRowHeader)
	}
	for _, t := range ts {
		taskRow(tw, t)
	}
	return tw.Flush()
}
