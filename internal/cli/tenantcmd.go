package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
)

func init() {
	addCommand(25, newTokenCmd)
	addCommand(26, newUsageCmd)
}

// tenantClient returns the TenantService client of the configured server.
func tenantClient(app *App) paddockv1connect.TenantServiceClient {
	hc, url := serverHTTP(app, time.Minute)
	tok := app.Cfg.V.GetString("client.token")
	return paddockv1connect.NewTenantServiceClient(hc, url, connect.WithInterceptors(bearerInterceptor{tok}))
}

func newTokenCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage the client tokens of tenants (needs an admin token)",
		Long: `Manage client tokens. Every token belongs to a tenant: the tasks it submits are that
tenant's, and it sees, waits on, cancels, retries and reads the logs of that tenant's tasks
only. Admin tokens (and the server's configured client token, server.token) manage tokens,
see every tenant's tasks and may submit for a tenant by naming it in task.tenant.

The server keeps only each token's SHA-256: a token's text is printed once, at create.`}
	var tn string
	var adm, asJSON bool
	create := &cobra.Command{
		Use: "create --tenant T [--admin]", Short: "Make a token for a tenant and print it (once)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tn == "" {
				return usageError{fmt.Errorf("--tenant: missing: name the tenant the token's tasks belong to")}
			}
			r, err := tenantClient(app).CreateToken(cmd.Context(), connect.NewRequest(&paddockv1.CreateTokenRequest{Tenant: tn, Admin: adm}))
			if err != nil {
				return fmt.Errorf("creating a token for tenant %s: %w", tn, err)
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			fmt.Fprintln(app.Out, r.Msg.GetToken())
			fmt.Fprintf(app.Err, "token %s for tenant %s made; keep it now: the server cannot show it again (use it with --token or PADDOCK_CLIENT_TOKEN)\n",
				r.Msg.GetInfo().GetId(), tn)
			return nil
		},
	}
	create.Flags().StringVar(&tn, "tenant", "", "the tenant the token's tasks belong to")
	create.Flags().BoolVar(&adm, "admin", false, "make an admin token (manages tokens, sees every tenant)")
	create.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var lsJSON bool
	ls := &cobra.Command{
		Use: "ls", Short: "List tokens (never their text)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := tenantClient(app).ListTokens(cmd.Context(), connect.NewRequest(&paddockv1.ListTokensRequest{}))
			if err != nil {
				return fmt.Errorf("listing tokens: %w", err)
			}
			if lsJSON {
				return printProto(app, r.Msg)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTENANT\tADMIN\tCREATED\tREVOKED")
			for _, t := range r.Msg.GetTokens() {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", t.GetId(), t.GetTenant(), t.GetAdmin(), msTime(t.GetCreatedAtUnixMs()), msTime(t.GetRevokedAtUnixMs()))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&lsJSON, "json", false, "print JSON")
	revoke := &cobra.Command{
		Use: "revoke ID", Short: "Revoke a token: the server refuses it from its next request on", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := tenantClient(app).RevokeToken(cmd.Context(), connect.NewRequest(&paddockv1.RevokeTokenRequest{Id: args[0]}))
			if err != nil {
				return fmt.Errorf("revoking token %s: %w", args[0], err)
			}
			fmt.Fprintf(app.Out, "token %s of tenant %s revoked at %s\n", r.Msg.GetToken().GetId(), r.Msg.GetToken().GetTenant(), msTime(r.Msg.GetToken().GetRevokedAtUnixMs()))
			return nil
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}

func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

func newUsageCmd(app *App) *cobra.Command {
	var tn string
	var since time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use: "usage [--tenant T] [--since 24h]", Short: "Sum the resources tenants' tasks used, with their cost", Args: cobra.NoArgs,
		Long: `Sum the attempts that finished within --since, by tenant: attempts, wall time, handler
CPU time, guest memory × wall time (GiB-seconds), and the blob bytes they fetched (in)
and wrote (out). With prices in the server's config (server.prices.cpu_second,
gib_second, gib_moved) each tenant's cost too; without them, a note says so.

A tenant's token sees its own usage; an admin's sees every tenant, or --tenant's.
Tasks deleted by retention (server.task_retention) no longer count.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since <= 0 {
				return usageError{fmt.Errorf("--since: %v is not positive: give a duration such as 24h", since)}
			}
			r, err := tenantClient(app).Usage(cmd.Context(), connect.NewRequest(&paddockv1.UsageRequest{Tenant: tn, SinceUnixMs: time.Now().Add(-since).UnixMilli()}))
			if err != nil {
				return fmt.Errorf("reading usage: %w", err)
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tATTEMPTS\tWALL-S\tCPU-S\tGIB-S\tBYTES-IN\tBYTES-OUT\tCOST")
			for _, u := range r.Msg.GetTenants() {
				cost := "-"
				if u.GetHasCost() {
					cost = fmt.Sprintf("%.4f", u.GetCost())
				}
				fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t%d\t%s\n", u.GetTenant(), u.GetAttempts(), u.GetWallSeconds(), u.GetCpuSeconds(),
					u.GetGibSeconds(), u.GetBytesIn(), u.GetBytesOut(), cost)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if n := r.Msg.GetNote(); n != "" {
				fmt.Fprintln(app.Err, "note:", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tn, "tenant", "", "the tenant (default: your token's; an admin's: every tenant)")
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "sum attempts that finished within this long")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
