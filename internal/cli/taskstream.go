package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched/stream"
)

// maxStreamLine bounds one input line of task stream (the server's inline limit is
// what really bounds a payload).
const maxStreamLine = 16 << 20

func newTaskStreamCmd(app *App) *cobra.Command {
	var (
		typ, class       string
		window           uint32
		transient, quiet bool
		priority, maxAtt int32
	)
	cmd := &cobra.Command{
		Use:   "stream --type TYPE --window W [--transient] < payloads",
		Short: "Run one task per input line through an ordered stream; print one result per line, in order",
		Long: `Run one task of TYPE per line of stdin (the line, without its newline, is the payload)
through an ordered stream, at most --window tasks outstanding at once, and print each
task's output on its own line of stdout in the order of the input lines. A task that
did not succeed prints "!<state> <failure kind>: <error>" on its line instead, and the
command exits non-zero at the end.

--transient keeps the tasks in the server's memory only (faster; a server restart loses
them: the stream then fails). Without it the tasks are stored like submitted ones.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			open := &paddockv1.StreamOpen{Type: typ, Window: window, Transient: transient, Priority: priority, MaxAttempts: maxAtt}
			var err error
			if open.Class, err = parseClass(class); err != nil {
				return err
			}
			if typ == "" {
				return usageError{errors.New("--type: missing: name the task type every line runs")}
			}
			if window == 0 || window > 4096 {
				return usageError{fmt.Errorf("--window %d: give the most tasks outstanding at once, 1..4096", window)}
			}
			urls := serverURLs(app)
			tc := paddockv1connect.NewTaskServiceClient(stream.HTTPClient(), urls[0])
			return runTaskStream(cmd.Context(), app, tc, open, stdin, quiet)
		},
	}
	f := cmd.Flags()
	f.StringVar(&typ, "type", "", "task type of every line (required)")
	f.Uint32Var(&window, "window", 64, "most tasks outstanding at once (1..4096)")
	f.BoolVar(&transient, "transient", false, "keep the tasks in the server's memory only (a server restart loses them)")
	f.StringVar(&class, "class", "batch", "online or batch")
	f.Int32Var(&priority, "priority", 0, "priority of every task (-100..100)")
	f.Int32Var(&maxAtt, "max-attempts", 0, "attempts per task (0: the server default)")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not print the server's notice about a transient stream")
	return cmd
}

// runTaskStream sends every line of in as one item and prints the results in order.
func runTaskStream(ctx context.Context, app *App, tc paddockv1connect.TaskServiceClient, open *paddockv1.StreamOpen, in io.Reader, quiet bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := stream.Open(ctx, tc, app.Cfg.V.GetString("client.token"), open)
	if err != nil {
		return err
	}
	defer c.Close()
	if n := c.Opened().GetNotice(); n != "" && !quiet {
		fmt.Fprintln(app.Err, "paddock: "+n)
	}
	type sendResult struct {
		n   uint64
		err error
	}
	sent := make(chan sendResult, 1)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), maxStreamLine)
		var n uint64
		for sc.Scan() {
			if _, err := c.Send(ctx, append([]byte(nil), sc.Bytes()...)); err != nil {
				sent <- sendResult{n, err}
				return
			}
			n++
		}
		if err := sc.Err(); err != nil {
			sent <- sendResult{n, fmt.Errorf("reading stdin: %w", err)}
			return
		}
		sent <- sendResult{n, c.CloseSend()}
	}()
	out := bufio.NewWriter(app.Out)
	defer out.Flush()
	failed := 0
	for {
		r, err := c.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", c.Opened().GetStreamId(), err)
		}
		if r.GetState() == paddockv1.State_STATE_SUCCEEDED {
			out.Write(r.GetOutput())
			out.WriteByte('\n')
		} else {
			failed++
			fmt.Fprintf(out, "!%s %s: %s\n", stateName(r.GetState()), kindName(r.GetFailureKind()), r.GetError())
		}
		out.Flush() // a pipe sees each result as it arrives
	}
	sr := <-sent
	if sr.err != nil {
		return sr.err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d tasks did not succeed", failed, sr.n)
	}
	return nil
}
