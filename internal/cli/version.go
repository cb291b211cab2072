package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/paddockvm/paddock/internal/buildinfo"
)

func init() { addCommand(100, newVersionCmd) }

// hypervisorVersions is filled in by the hypervisor-aware file of this package; it
// returns the libvirt and QEMU versions at uri.
var hypervisorVersions func(ctx context.Context, app *App) (map[string]string, error)

func newVersionCmd(app *App) *cobra.Command {
	var withHV, asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print Paddock's version (and, with --hypervisor, libvirt's and QEMU's)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := map[string]string{
				"paddock": buildinfo.String(),
				"go":      runtime.Version(),
				"os/arch": runtime.GOOS + "/" + runtime.GOARCH,
			}
			if withHV {
				if hypervisorVersions == nil {
					return fmt.Errorf("this build has no hypervisor support")
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
				defer cancel()
				hv, err := hypervisorVersions(ctx, app)
				if err != nil {
					return err
				}
				for k, v := range hv {
					info[k] = v
				}
			}
			if asJSON {
				enc := json.NewEncoder(app.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprintf(app.Out, "paddock %s (%s, %s)\n", info["paddock"], info["go"], info["os/arch"])
			for _, k := range []string{"libvirt", "qemu", "accel", "uri"} {
				if v, ok := info[k]; ok {
					fmt.Fprintf(app.Out, "%-8s %s\n", k, v)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&withHV, "hypervisor", false, "also connect to libvirt and report libvirt and QEMU versions and the acceleration chosen")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
