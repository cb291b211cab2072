package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

func init() { addCommand(30, newAgentCmd) }

func newAgentCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "See the agents connected to a Paddock server (or to each replica of client.server)"}
	var asJSON bool
	ls := &cobra.Command{
		Use: "ls", Short: "List agents with their task types, slots and load", Args: cobra.NoArgs,
		Long: `List the agents the server knows, one row per task type each serves.

RUNNING/LIMIT is the tasks of the type the agent runs and the type's current limit
from the agent's concurrency allocator: the agent's total slots are shared among its
types, each keeps its MIN, and every heartbeat interval the rest go to the types whose
queuing DELAY (measured by the server) is furthest above their TOLERABLE delay, in
multiples of it. The server dispatches a type to the agent only below its limit.

With several server replicas in client.server, every replica is asked and REPLICA says
which one holds each agent's session.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			agents, err := listEach(cmd.Context(), app, func(ctx context.Context, cc paddockv1connect.ClusterServiceClient) ([]*paddockv1.Agent, error) {
				r, err := cc.ListAgents(ctx, connect.NewRequest(&paddockv1.ListAgentsRequest{}))
				if err != nil {
					return nil, err
				}
				return r.Msg.GetAgents(), nil
			})
			if err != nil {
				return err
			}
			agents = connectedFirst(agents, (*paddockv1.Agent).GetId, func(a *paddockv1.Agent) bool { return a.GetState() == "connected" })
			if asJSON {
				return printProto(app, &paddockv1.ListAgentsResponse{Agents: agents})
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tHOST\tREPLICA\tSTATE\tRUNNING/TOTAL\tLAST HEARTBEAT\tTYPE\tRUNNING/LIMIT\tMIN\tTOLERABLE\tDELAY")
			for _, a := range agents {
				hb := "-"
				if a.GetLastHeartbeatUnixMs() > 0 {
					hb = time.Since(time.UnixMilli(a.GetLastHeartbeatUnixMs())).Round(time.Millisecond).String() + " ago"
				}
				total := "-"
				if a.GetTotalSlots() > 0 {
					total = fmt.Sprint(a.GetTotalSlots())
				}
				head := fmt.Sprintf("%s\t%s\t%s\t%s\t%d/%s\t%s", a.GetId(), a.GetHost(), orDash(a.GetReplica() != "", a.GetReplica()), a.GetState(), a.GetRunning(), total, hb)
				if len(a.GetTypes()) == 0 {
					fmt.Fprintf(tw, "%s\t-\t\t\t\t\n", head)
				}
				for i, t := range a.GetTypes() {
					if i > 0 {
						head = "\t\t\t\t\t"
					}
					fmt.Fprintf(tw, "%s\t%s@%s\t%d/%d\t%s\t%s\t%s\n", head, t.GetName(), t.GetVersion(), t.GetRunning(), t.GetSlots(),
						orDash(t.GetMinSlots() > 0, fmt.Sprint(t.GetMinSlots())),
						orDash(t.GetTolerableDelayMs() > 0, msString(t.GetTolerableDelayMs())),
						orDash(t.GetTolerableDelayMs() > 0, msString(t.GetDelayMs())))
				}
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}

func orDash(ok bool, s string) string {
	if !ok {
		return "-"
	}
	return s
}

func msString(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() }
