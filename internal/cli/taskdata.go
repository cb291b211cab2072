package cli

import (
	"context"
	"errors"
	"fmt"
	"github.com/paddockvm/paddock/sched/pipeline"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/paddockvm/paddock/api/guestabi"
	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/blob/blobhttp"
)

// fileInput is one --input name=FILE.
type fileInput struct {
	name, path string
	size       int64
}

// addInputs puts the --input and --input-blob flags into spec. Small --input files go
// inline (together at most inlineMax, smallest first; all of them with inline), the
// others are uploaded as blobs unless the server has them. Every error names the flag
// and the fix.
func addInputs(ctx context.Context, app *App, c *blobhttp.Client, spec *paddockv1.TaskSpec, inputs, inputBlobs []string, inline bool, inlineMax string, quiet bool) error {
	budget, err := parseSize(inlineMax)
	if err != nil {
		return usageError{fmt.Errorf("--inline-max %q: want bytes or a size with a unit, e.g. 1MiB (0: every --input as a blob)", inlineMax)}
	}
	seen := map[string]string{}
	claim := func(flag, arg, name string) error {
		if !guestabi.ValidName(name) {
			return usageError{fmt.Errorf("%s %q: input name %q: use %s", flag, arg, name, guestabi.NameRule)}
		}
		if prev, dup := seen[name]; dup {
			return usageError{fmt.Errorf("%s %q: input %q is already given by %s: give each input one name", flag, arg, name, prev)}
		}
		seen[name] = flag + " " + arg
		return nil
	}
	var files []fileInput
	fromStdin := ""
	for _, in := range inputs {
		name, path, ok := strings.Cut(in, "=")
		if !ok || path == "" {
			return usageError{fmt.Errorf("--input %q: want name=FILE, e.g. --input data.csv=./data.csv (or name=- for stdin)", in)}
		}
		if err := claim("--input", in, name); err != nil {
			return err
		}
		if pipeline.IsRef(path) { // another task's output: the server resolves it
			if _, err := pipeline.ParseRef(path); err != nil {
				return usageError{fmt.Errorf("--input %s: %w", in, err)}
			}
			if spec.InputTasks == nil {
				spec.InputTasks = map[string]string{}
			}
			spec.InputTasks[name] = path
			continue
		}
		if path == "-" {
			if fromStdin != "" {
				return usageError{fmt.Errorf("--input %s and --input %s: only one input can read stdin", fromStdin, in)}
			}
			fromStdin = in
			tmp, err := spoolStdin()
			if err != nil {
				return fmt.Errorf("--input %s: %w", in, err)
			}
			defer os.Remove(tmp)
			path = tmp
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("--input %s=%s: %w: name an existing file", name, path, errors.Unwrap(err))
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("--input %s=%s: not a regular file: name a file (for a directory, archive it first)", name, path)
		}
		files = append(files, fileInput{name: name, path: path, size: fi.Size()})
	}
	var refs []fileInput // --input-blob, checked below
	for _, in := range inputBlobs {
		name, ds, ok := strings.Cut(in, "=")
		if !ok || ds == "" {
			return usageError{fmt.Errorf("--input-blob %q: want name=DIGEST, e.g. --input-blob data.csv=sha256:<64 hex digits> (from paddock blob put)", in)}
		}
		if err := claim("--input-blob", in, name); err != nil {
			return err
		}
		if _, err := blob.ParseDigest(ds); err != nil {
			return usageError{fmt.Errorf("--input-blob %s: %w", in, err)}
		}
		refs = append(refs, fileInput{name: name, path: ds})
	}

	// Smallest first into the inline budget; the rest are blobs.
	sort.SliceStable(files, func(i, j int) bool { return files[i].size < files[j].size })
	var used int64
	for _, f := range files {
		if inline || used+f.size <= budget {
			b, err := os.ReadFile(f.path)
			if err != nil {
				return fmt.Errorf("--input %s=%s: %w", f.name, f.path, err)
			}
			if spec.Inputs == nil {
				spec.Inputs = map[string][]byte{}
			}
			spec.Inputs[f.name] = b
			used += int64(len(b))
			continue
		}
		info, uploaded, err := putFile(ctx, app, c, f.path, quiet)
		if err != nil {
			return fmt.Errorf("--input %s=%s: %w", f.name, f.path, err)
		}
		if !uploaded && !quiet {
			fmt.Fprintf(app.Err, "%s: already on the server (%s), not uploaded\n", f.path, info.Digest)
		}
		addBlobInput(spec, f.name, info)
	}
	for _, r := range refs {
		d := blob.Digest(r.path)
		info, err := c.Stat(ctx, d)
		if errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("--input-blob %s=%s: the server has no such blob: upload the file with 'paddock blob put FILE' (or pass --input %s=FILE)", r.name, d, r.name)
		}
		if err != nil {
			return fmt.Errorf("--input-blob %s=%s: %w", r.name, d, err)
		}
		addBlobInput(spec, r.name, info)
	}
	return nil
}

func addBlobInput(spec *paddockv1.TaskSpec, name string, info blob.Info) {
	if spec.InputBlobs == nil {
		spec.InputBlobs = map[string]*paddockv1.BlobRef{}
	}
	spec.InputBlobs[name] = &paddockv1.BlobRef{Digest: string(info.Digest), Size: info.Size}
}

// printBlobs prints a task's blob inputs or outputs, one line each, sorted by name.
func printBlobs(app *App, label string, m map[string]*paddockv1.BlobRef) {
	for _, name := range sortedNames(m) {
		r := m[name]
		fmt.Fprintf(app.Out, "%-10s %s  blob  %s  %s\n", label+":", name, humanize.IBytes(uint64(max(r.GetSize(), 0))), r.GetDigest())
	}
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func newTaskOutputCmd(app *App) *cobra.Command {
	var out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "output ID [NAME] [-o FILE]",
		Short: "Write a task's output, or one named output (inline or blob), to stdout or a file",
		Long: `Without NAME: the task's main output (as 'paddock task get' shows it); when it has none,
the list of its named outputs. With NAME: that output, inline or a blob (streamed; -o FILE
resumes a partial FILE).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, _ := clients(app)
			r, err := tc.Get(cmd.Context(), connect.NewRequest(&paddockv1.GetRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			t := r.Msg.GetTask()
			if t.GetState() != paddockv1.State_STATE_SUCCEEDED {
				return fmt.Errorf("task %s is %s: only a succeeded task has outputs (paddock task wait %s)", t.GetId(), stateName(t.GetState()), t.GetId())
			}
			named := len(t.GetOutputs()) + len(t.GetOutputBlobs())
			if len(args) == 1 {
				if len(t.GetOutput()) == 0 && named > 0 {
					return listOutputs(app, t)
				}
				if err := writeOutput(app, out, t.GetOutput()); err != nil {
					return err
				}
				if named > 0 && !quiet {
					fmt.Fprintf(app.Err, "task %s also has %d named output(s): paddock task output %s NAME (list: paddock task get %s)\n", t.GetId(), named, t.GetId(), t.GetId())
				}
				return nil
			}
			name := args[1]
			if b, ok := t.GetOutputs()[name]; ok {
				return writeOutput(app, out, b)
			}
			ref, ok := t.GetOutputBlobs()[name]
			if !ok {
				all := append(sortedNames(t.GetOutputs()), sortedNames(t.GetOutputBlobs())...)
				if len(all) == 0 {
					return fmt.Errorf("task %s has no output named %q, and no named outputs at all: run paddock task output %s for its main output", t.GetId(), name, t.GetId())
				}
				return fmt.Errorf("task %s has no output named %q: its outputs are %s", t.GetId(), name, strings.Join(all, ", "))
			}
			d, err := blob.ParseDigest(ref.GetDigest())
			if err != nil {
				return fmt.Errorf("task %s output %s: %w", t.GetId(), name, err)
			}
			return download(cmd.Context(), app, blobClient(app), d, out, name, quiet)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE (default: stdout)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress or notes on stderr")
	return cmd
}

// writeOutput writes an inline output to path ("" or "-": stdout).
func writeOutput(app *App, path string, b []byte) error {
	if path == "" || path == "-" {
		_, err := app.Out.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("-o %s: %w", path, err)
	}
	return nil
}

// listOutputs prints a task's named outputs.
func listOutputs(app *App, t *paddockv1.Task) error {
	tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSIZE\tDIGEST")
	for _, n := range sortedNames(t.GetOutputs()) {
		b := t.GetOutputs()[n]
		fmt.Fprintf(tw, "%s\tinline\t%s\t%s\n", n, humanize.IBytes(uint64(len(b))), blob.FromBytes(b))
	}
	for _, n := range sortedNames(t.GetOutputBlobs()) {
		r := t.GetOutputBlobs()[n]
		fmt.Fprintf(tw, "%s\tblob\t%s\t%s\n", n, humanize.IBytes(uint64(max(r.GetSize(), 0))), r.GetDigest())
	}
	return tw.Flush()
}

// stdin is what "-" reads (--payload-file -, --input name=-); tests replace it.
var stdin io.Reader = os.Stdin

// readFileOrStdin reads the file at path, or stdin for "-".
func readFileOrStdin(path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return b, nil
	}
	return os.ReadFile(path)
}

// spoolStdin copies stdin to a temporary file (an input's size must be known before it
// goes inline or up as a blob) and returns its path; the caller removes it.
func spoolStdin() (string, error) {
	f, err := os.CreateTemp("", "paddock-stdin-")
	if err != nil {
		return "", fmt.Errorf("spooling stdin to a temporary file: %w", err)
	}
	if _, err := io.Copy(f, stdin); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("spooling stdin to %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("spooling stdin to %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}
