package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/paddockvm/paddock/internal/config"
)

func init() { addCommand(90, newConfigCmd) }

func newConfigCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	var asJSON bool
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration and where each value came from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries := app.Cfg.Entries()
			if asJSON {
				enc := json.NewEncoder(app.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"file": app.Cfg.File, "keys": entries})
			}
			file := app.Cfg.File
			if file == "" {
				file = "(none found)"
			}
			fmt.Fprintf(app.Out, "# config file: %s\n", file)
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%v\t%s\n", e.Key, e.Value, e.Source)
			}
			return tw.Flush()
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	// Every key's flag, so that its effect on the configuration can be seen.
	config.AddFlags(show.Flags(), "*")
	cmd.AddCommand(show, newConfigExampleCmd(app))
	return cmd
}
