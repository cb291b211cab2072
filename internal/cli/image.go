package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/paddockvm/paddock/images"
	"github.com/paddockvm/paddock/internal/config"
)

func init() {
	config.Register(config.Key{Name: "images.dir", Default: "", Usage: "image store directory (default: <data_dir>/images)", Flag: "images-dir", Cmds: []string{"image", "host", "dev"}})
	addCommand(40, newImageCmd)
}

// imageStore opens the store at images.dir, or <data_dir>/images.
func imageStore(app *App) (*images.Store, error) {
	dir := app.Cfg.V.GetString("images.dir")
	if dir == "" {
		dir = filepath.Join(app.Cfg.V.GetString("data_dir"), "images")
	}
	return images.Open(dir)
}

func newImageCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build and manage micro-VM images (kernel + initramfs with the agent as /init)",
	}
	cmd.AddCommand(newImageBuildCmd(app), newImageLsCmd(app), newImageRmCmd(app), newImageInspectCmd(app))
	return cmd
}

// defaultAgent finds paddock-agent beside this executable, then in $PATH.
func defaultAgent() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "paddock-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("paddock-agent"); err == nil {
		return p, nil
	}
	return "", errors.New("no paddock-agent binary beside paddock or in $PATH: build it (make build) or pass --agent")
}

// parseHandler reads name=path or name=path@version.
func parseHandler(s string) (images.Handler, error) {
	name, path, ok := strings.Cut(s, "=")
	if !ok || name == "" || path == "" {
		return images.Handler{}, usageError{fmt.Errorf("--handler %q: use name=path or name=path@version", s)}
	}
	h := images.Handler{Name: name, Path: path}
	if i := strings.LastIndexByte(path, '@'); i > 0 && !strings.Contains(path[i:], "/") {
		h.Path, h.Version = path[:i], path[i+1:]
	}
	return h, nil
}

func newImageBuildCmd(app *App) *cobra.Command {
	var (
		spec           images.Spec
		handlers       []string
		cfgFile        string
		asJSON, noProg bool
	)
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build an image into the store and print its digest",
		Long: `Build a micro-VM image: a kernel (default: the newest /boot/vmlinuz-*) and an initramfs
holding paddock-agent as /init, the virtio kernel modules (plus --module ones) with their
dependencies, the handlers and the agent configuration. Each handler is started once on
this host to ask which task types it serves (one handler may serve several); the manifest
records them, and pools' task_types are checked against them. The same inputs always give
the same digest; an unchanged build is a cache hit.`,
		Example: `  paddock image build --agent bin/paddock-agent --handler echo=bin/echo@1.0.0
  paddock image build --kernel /boot/vmlinuz-6.1.0-56-amd64 --module ext4 --agent-config agent.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if spec.Agent == "" {
				p, err := defaultAgent()
				if err != nil {
					return err
				}
				spec.Agent = p
			}
			for _, h := range handlers {
				hh, err := parseHandler(h)
				if err != nil {
					return err
				}
				spec.Handlers = append(spec.Handlers, hh)
			}
			if cfgFile != "" {
				b, err := os.ReadFile(cfgFile)
				if err != nil {
					return fmt.Errorf("reading --agent-config: %w", err)
				}
				spec.AgentConfig = b
			}
			store, err := imageStore(app)
			if err != nil {
				return err
			}
			var opts []images.Option
			if f, ok := app.Err.(*os.File); ok && !noProg && term.IsTerminal(int(f.Fd())) {
				opts = append(opts, images.WithProgress(progressPrinter(f)))
			}
			img, err := store.Build(cmd.Context(), spec, opts...)
			if len(opts) > 0 {
				fmt.Fprint(app.Err, "\r\033[K")
			}
			if err != nil {
				return err
			}
			app.Log.Debug("image ready", "digest", img.Digest, "dir", img.Dir, "cached", img.Cached)
			if asJSON {
				return printJSON(app.Out, img.Manifest)
			}
			fmt.Fprintln(app.Out, img.Digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Kernel, "kernel", "", "kernel image (default: the newest /boot/vmlinuz-*)")
	f.StringVar(&spec.KernelVersion, "kernel-version", "", "kernel version (default: from the file name or the bzImage header)")
	f.StringVar(&spec.ModulesDir, "modules-dir", "", "kernel module tree (default: /lib/modules/<version>)")
	f.StringSliceVar(&spec.Modules, "module", nil, "extra kernel module to load (repeatable; dependencies are added)")
	f.StringVar(&spec.Agent, "agent", "", "static paddock-agent binary (default: beside paddock, then $PATH)")
	f.StringVar(&spec.AgentVersion, "agent-version", "", "agent version for the manifest (default: from its Go build info)")
	f.StringArrayVar(&handlers, "handler", nil, "handler binary as name=path or name=path@version (repeatable)")
	f.StringVar(&cfgFile, "agent-config", "", "agent configuration file (JSON, see agent.Config)")
	f.BoolVar(&asJSON, "json", false, "print the manifest as JSON instead of the digest")
	f.BoolVar(&noProg, "no-progress", false, "no progress line even on a terminal")
	return cmd
}

// progressPrinter rewrites one status line on a terminal.
func progressPrinter(w io.Writer) func(images.Event) {
	return func(e images.Event) {
		line := e.Step
		if e.Total > 0 {
			line += fmt.Sprintf(" [%d/%d]", e.Done+1, e.Total)
		}
		if e.Detail != "" {
			line += " " + e.Detail
		}
		fmt.Fprintf(w, "\r\033[Kbuilding image: %s", line)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newImageLsCmd(app *App) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the images in the store",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := imageStore(app)
			if err != nil {
				return err
			}
			imgs, err := store.List()
			if err != nil {
				return err
			}
			if asJSON {
				ms := make([]images.Manifest, 0, len(imgs))
				for _, i := range imgs {
					ms = append(ms, i.Manifest)
				}
				return printJSON(app.Out, ms)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DIGEST\tKERNEL\tAGENT\tMODULES\tHANDLERS\tSIZE")
			for _, i := range imgs {
				var hs []string
				for _, h := range i.Manifest.Handlers {
					hs = append(hs, h.Name)
				}
				handlers := strings.Join(hs, ",")
				if handlers == "" {
					handlers = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.1f MiB\n", i.Digest[:12], i.Manifest.KernelVersion, i.Manifest.Agent.Version,
					len(i.Manifest.Modules), handlers, float64(i.Size())/(1<<20))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the manifests as JSON")
	return cmd
}

func newImageRmCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "rm DIGEST...",
		Short: "Remove images (a digest prefix of at least 4 hex digits is enough)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := imageStore(app)
			if err != nil {
				return err
			}
			for _, ref := range args {
				img, err := store.Remove(ref)
				if err != nil {
					return err
				}
				fmt.Fprintf(app.Out, "removed %s\n", img.Digest)
			}
			return nil
		},
	}
}

func newImageInspectCmd(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect DIGEST",
		Short: "Print an image's manifest (JSON, with the task types each handler serves) and its directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := imageStore(app)
			if err != nil {
				return err
			}
			img, err := store.Get(args[0])
			if err != nil {
				return err
			}
			return printJSON(app.Out, struct {
				Dir string `json:"dir"`
				images.Manifest
			}{img.Dir, img.Manifest})
		},
	}
}
