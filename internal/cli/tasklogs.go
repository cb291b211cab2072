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
on stdout/stderr), attempt by attempt. An attempt's log reaches the server with its result,
so a running attempt shows nothing yet. The agent keeps the newest 1 MiB of each attempt;
a line says how many older ones it dropped.

  --attempt N   only attempt N (1 for the first run)
  -f, --follow  keep printing each attempt's log as it ends, until the task ends`,
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
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing attempts' logs until the task ends")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (no --follow)")
	return cmd
}

// followLogs prints the logs of id's attempts (only attempt when not 0); with follow,
// it goes on printing each attempt's log as it arrives until the task is terminal.
func followLogs(ctx context.Context, app *App, tc paddockv1connect.TaskServiceClient, id string, attempt int32, follow bool) error {
	printed := map[int32]bool{}
	for {
		r, err := tc.Logs(ctx, connect.NewRequest(&paddockv1.LogsRequest{Id: id, Attempt: attempt}))
		if err != nil {
			return err
		}
		for _, a := range r.Msg.GetAttempts() {
			if printed[a.GetAttempt()] {
				continue
			}
			printed[a.GetAttempt()] = true
			printAttemptLog(app, a, attempt == 0)
		}
		terminal := terminalState(r.Msg.GetState())
		if !follow || terminal || (attempt != 0 && printed[attempt]) {
			if len(printed) == 0 && !follow {
				fmt.Fprintf(app.Err, "task %s (%s) has no logs yet: an attempt's log arrives with its result\n", id, stateName(r.Msg.GetState()))
			}
			return nil
		}
		// Wait returns at once when the task ends, else after the timeout: then look again.
		if _, err := tc.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: (2 * time.Second).Milliseconds()})); err != nil {
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

func printAttemptLog(app *App, a *paddockv1.AttemptLog, header bool) {
	if header {
		fmt.Fprintf(app.Out, "== attempt %d ==\n", a.GetAttempt())
	}
	if n := a.GetDroppedLines(); n > 0 {
		fmt.Fprintf(app.Out, "… %d earlier lines (%s) dropped: the agent keeps the newest lines of each attempt\n", n, humanize.IBytes(a.GetDroppedBytes()))
	}
	for _, l := range a.GetLines() {
		fmt.Fprintf(app.Out, "%s %-5s %s\n", time.Unix(0, l.GetUnixNanos()).UTC().Format("2006-01-02T15:04:05.000Z"), strings.ToUpper(l.GetLevel()), l.GetText())
	}
}
