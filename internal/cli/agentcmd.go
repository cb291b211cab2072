package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
)

func init() { addCommand(30, newAgentCmd) }

func newAgentCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "See the agents connected to a Paddock server"}
	var asJSON bool
	ls := &cobra.Command{
		Use: "ls", Short: "List agents with their task types, slots and load", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, cc := clients(app)
			r, err := cc.ListAgents(cmd.Context(), connect.NewRequest(&paddockv1.ListAgentsRequest{}))
			if err != nil {
				return err
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tHOST\tSTATE\tRUNNING\tLAST HEARTBEAT\tTYPES (running/slots)")
			for _, a := range r.Msg.GetAgents() {
				var ts []string
				for _, t := range a.GetTypes() {
					ts = append(ts, fmt.Sprintf("%s@%s %d/%d", t.GetName(), t.GetVersion(), t.GetRunning(), t.GetSlots()))
				}
				hb := "-"
				if a.GetLastHeartbeatUnixMs() > 0 {
					hb = time.Since(time.UnixMilli(a.GetLastHeartbeatUnixMs())).Round(time.Millisecond).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", a.GetId(), a.GetHost(), a.GetState(), a.GetRunning(), hb, strings.Join(ts, ", "))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}
