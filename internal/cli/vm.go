package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

func init() { addCommand(31, newVMCmd) }

func newVMCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Guests of the host daemons"}
	var host string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List every host's guests: pool, state, tasks run, uptime, CPU, memory, agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, cl := clients(app)
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			r, err := cl.ListVMs(ctx, connect.NewRequest(&paddockv1.ListVMsRequest{Host: host}))
			if err != nil {
				return fmt.Errorf("listing guests: %w", err)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GUEST\tHOST\tPOOL\tSTATE\tTASKS RUN\tRUNNING\tUPTIME\tCPU%\tMEMORY\tAGENT")
			for _, v := range r.Msg.GetVms() {
				agent := v.GetAgent()
				if agent == "" {
					agent = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%.1f\t%s\t%s\n", v.GetName(), v.GetHost(), v.GetPool(), v.GetState(), v.GetTasksRun(), v.GetRunning(),
					(time.Duration(v.GetUptimeMs()) * time.Millisecond).Round(time.Second), v.GetCpuPercent(), mib(v.GetMemoryBytes()), agent)
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&host, "host", "", "only this host's guests")
	cmd.AddCommand(ls)
	return cmd
}
