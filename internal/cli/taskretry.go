package cli

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

func newTaskRetryCmd(app *App) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "retry ID",
		Short: "Submit a failed, dead or cancelled task's spec again, as a new task",
		Long: `Submit the spec of a FAILED, DEAD or CANCELLED task again as a new task (a new id, no
idempotency key); the old task stays as it ended. Prints the new task's id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, _ := clients(app)
			r, err := tc.Retry(cmd.Context(), connect.NewRequest(&paddockv1.RetryRequest{Id: args[0]}))
			if err != nil {
				return fmt.Errorf("retrying task %s: %w", args[0], err)
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			fmt.Fprintln(app.Out, r.Msg.GetTask().GetId())
			fmt.Fprintf(app.Err, "task %s retried as %s (%s)\n", r.Msg.GetRetryOf(), r.Msg.GetTask().GetId(), stateName(r.Msg.GetTask().GetState()))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the RetryResponse as JSON")
	return cmd
}
