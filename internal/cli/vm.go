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
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List every host's guests: pool, state, tasks run, uptime, CPU, memory (host RSS, agent and handlers in the guest), agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, cl := clients(app)
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			r, err := cl.ListVMs(ctx, connect.NewRequest(&paddockv1.ListVMsRequest{Host: host}))
			if err != nil {
				return fmt.Errorf("listing guests: %w", err)
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GUEST\tHOST\tPOOL\tSTATE\tTASKS RUN\tRUNNING\tUPTIME\tCPU%\tMEMORY\tHOST RSS\tAGENT RSS\tHANDLERS RSS\tAGENT")
			for _, v := range r.Msg.GetVms() {
				agent := v.GetAgent()
				if agent == "" {
					agent = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\n", v.GetName(), v.GetHost(), v.GetPool(), v.GetState(), v.GetTasksRun(), v.GetRunning(),
					(time.Duration(v.GetUptimeMs()) * time.Millisecond).Round(time.Second), v.GetCpuPercent(), mib(v.GetMemoryBytes()),
					optMiB(int64(v.GetRssBytes())), agentRSS(v), handlersRSS(v), agent)
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&host, "host", "", "only this host's guests")
	ls.Flags().BoolVar(&asJSON, "json", false, "print the ListVMsResponse as JSON")
	cmd.AddCommand(ls)
	return cmd
}

// optMiB is b in MiB with one decimal, or "-" when unknown (0).
func optMiB(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// agentRSS is the agent's RSS and, in brackets, its anonymous part (what it adds
// beyond its binary's pages), e.g. "15.2 MiB (3.9 anon)"; "-" before it reported.
func agentRSS(v *paddockv1.VM) string {
	if v.GetAgentRssBytes() <= 0 {
		return "-"
	}
	return fmt.Sprintf("%s (%.1f anon)", optMiB(v.GetAgentRssBytes()), float64(v.GetAgentAnonBytes())/(1<<20))
}

// handlersRSS is the handlers' memory and how many run, e.g. "24.0 MiB (2 up)"; "-"
// before the agent reported, "0 up" while no handler has been needed yet.
func handlersRSS(v *paddockv1.VM) string {
	if v.GetAgentRssBytes() == 0 {
		return "-"
	}
	if v.GetHandlersUp() == 0 {
		return "0 up"
	}
	return fmt.Sprintf("%s (%d up)", optMiB(v.GetHandlersRssBytes()), v.GetHandlersUp())
}
