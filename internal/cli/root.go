package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/paddockvm/paddock/internal/config"
	"github.com/paddockvm/paddock/internal/logging"
)

// App is what every command gets: the loaded configuration, a logger and the streams.
// Its fields are set before a command's RunE runs.
type App struct {
	Cfg *config.Config
	Log *slog.Logger
	Out io.Writer
	Err io.Writer
}

type cmdFactory struct {
	order int
	new   func(*App) *cobra.Command
}

var factories []cmdFactory

// addCommand registers a top-level command; order sorts the help listing.
func addCommand(order int, f func(*App) *cobra.Command) {
	factories = append(factories, cmdFactory{order, f})
}

// NewRoot returns the `paddock` root command writing to out and errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	app := &App{Out: out, Err: errOut}
	var cfgFile string
	root := &cobra.Command{
		Use:   "paddock",
		Short: "Paddock runs IO-heavy and untrusted tasks in sealed micro-VMs",
		Long: `Paddock runs IO-heavy and untrusted tasks inside KVM guests: a server keeps a durable
task queue, a host daemon boots micro-VM guests through libvirt, and an agent in each
guest runs pluggable task handlers.

Configuration: paddock.yaml (in ./ or /etc/paddock/, or --config), PADDOCK_* environment
variables for every key (hypervisor.uri ↔ PADDOCK_HYPERVISOR_URI), and flags.
See the effective values with 'paddock config show'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgFile, cmd.Flags())
			if err != nil {
				return err
			}
			log, err := logging.New(errOut, cfg.V.GetString("log.level"), cfg.V.GetString("log.format"))
			if err != nil {
				return err
			}
			app.Cfg, app.Log = cfg, log
			return nil
		},
	}
	root.SetOut(out)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.SetErr(errOut)
	root.PersistentFlags().StringVar(&cfgFile, "config", "", "configuration file (default: paddock.yaml in ./ or /etc/paddock/)")
	config.AddFlags(root.PersistentFlags(), "")
	fs := append([]cmdFactory(nil), factories...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].order < fs[j].order })
	for _, f := range fs {
		c := f.new(app)
		config.AddFlags(c.PersistentFlags(), c.Name())
		root.AddCommand(c)
	}
	return root
}

// Execute runs the command line args and returns the process exit code: 0 on success,
// 1 on error (printed to errOut), 2 on a usage error.
func Execute(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := NewRoot(out, errOut)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(errOut, "paddock: %v\n", err)
	if connect.CodeOf(err) == connect.CodeUnavailable && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(errOut, "paddock: no Paddock server answered at --server (client.server, PADDOCK_CLIENT_SERVER): start one with 'paddock dev' or 'paddock server', or point --server at it")
	}
	if cmd != nil && isUsageError(err) {
		fmt.Fprintf(errOut, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}

// usageError marks an error in the command line itself.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isUsageError(err error) bool {
	_, ok := err.(usageError)
	return ok
}
