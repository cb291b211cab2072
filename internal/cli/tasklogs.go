package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

func newTaskLogsCmd(app *App) *cobra.Command {
	var attempt int32
	var follow, asJSON bool
	cmd := &cobra.Command{
		Use:   "logs ID [--attempt N] [-f]",
		Short: "Show what the handler logged during a task's attempts",
		Long: `Show the lines the task's handler logged (sdk.Logger, Request.Logger, and what it printed
on stdout/stderr), attempt by attempt. The agent sends a running attempt's lines to the
server as they come (every 250 ms or 32 KiB), so a running task shows them too. The server
keeps the newest 1 MiB of each attempt; a line says how many older ones were dropped.

  --attempt N   only attempt N (1 for the first run)
  -f, --follow  keep printing new lines as they arrive, until the task ends`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, _ := clients(app)
			if asJSON {
				r, err := tc.Logs(cmd.Context(), connect.NewRequest(&paddockv1.LogsRequest{Id: args[0], Attempt: attempt}))
				if err != nil {
					return err
				}
				return printProto(app, r.Msg)
			}
			return followLogs(cmd.Context(), app, tc, args[0], attempt, follow)
		},
	}
	cmd.Flags().Int32Var(&attempt, "attempt", 0, "only this attempt (1 for the first run; 0: every attempt)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines as they arrive, until the task ends")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (no --follow)")
	return cmd
}

// followInterval is how often `task logs -f` looks for new lines of a running task.
const followInterval = 500 * time.Millisecond

// followLogs prints the logs of id's attempts (only attempt when not 0); with follow,
// it goes on printing the new lines of each attempt as they arrive (a running attempt's
// lines reach the server while it runs) until the task is terminal.
func followLogs(ctx context.Context, app *App, tc paddockv1connect.TaskServiceClient, id string, attempt int32, follow bool) error {
	shown := map[int32]int64{} // per attempt: lines printed, counted from its first line ever (dropped ones included)
	for {
		r, err := tc.Logs(ctx, connect.NewRequest(&paddockv1.LogsRequest{Id: id, Attempt: attempt}))
		if err != nil {
			return err
		}
		for _, a := range r.Msg.GetAttempts() {
			n, seen := shown[a.GetAttempt()]
			shown[a.GetAttempt()] = printAttemptLog(app, a, attempt == 0 && !seen, n)
		}
		if !follow || terminalState(r.Msg.GetState()) {
			if len(shown) == 0 && !follow {
				fmt.Fprintf(app.Err, "task %s (%s) has no logs yet\n", id, stateName(r.Msg.GetState()))
			}
			return nil
		}
		// Wait returns at once when the task ends, else after the timeout: then look again.
		if _, err := tc.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: followInterval.Milliseconds()})); err != nil {
			return err
		}
	}
}

func terminalState(s paddockv1.State) bool {
	switch s {
	case paddockv1.State_STATE_SUCCEEDED, paddockv1.State_STATE_FAILED, paddockv1.State_STATE_CANCELLED, paddockv1.State_STATE_DEAD:
		return true
	}
	return false
}

// printAttemptLog prints the lines of a not yet printed (shown: how many of the
// attempt's lines ever logged were printed already, dropped ones included), with a
// header first when header is set and a marker for lines dropped before they were
// printed. It returns the new count of lines printed.
func printAttemptLog(app *App, a *paddockv1.AttemptLog, header bool, shown int64) int64 {
	if header {
		fmt.Fprintf(app.Out, "== attempt %d ==\n", a.GetAttempt())
	}
	dropped := int64(a.GetDroppedLines())
	from := shown - dropped
	if from < 0 {
		if shown == 0 {
			fmt.Fprintf(app.Out, "… %d earlier lines (%s) dropped: the newest 1 MiB of each attempt is kept\n", dropped, humanize.IBytes(a.GetDroppedBytes()))
		} else {
			fmt.Fprintf(app.Out, "… %d lines dropped: the newest 1 MiB of each attempt is kept\n", -from)
		}
		from = 0
	}
	lines := a.GetLines()
	for _, l := range lines[min(int(from), len(lines)):] {
		fmt.Fprintf(app.Out, "%s %-5s %s\n", time.Unix(0, l.GetUnixNanos()).UTC().Format("2006-01-02T15:04:05.000Z"), strings.ToUpper(l.GetLevel()), l.GetText())
	}
	return dropped + int64(len(lines))
}
