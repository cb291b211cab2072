package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/internal/config"
)

// clientCmds get the client.* flags.
var clientCmds = []string{"task", "blob", "agent", "host", "vm", "bench", "token", "usage"}

func init() {
	config.Register(
		config.Key{Name: "client.server", Default: "http://127.0.0.1:7070", Usage: "URL of the Paddock server's client API; several server replicas as a YAML list or separated by commas (a command uses one that answers)", Flag: "server", Cmds: clientCmds},
		config.Key{Name: "client.token", Default: "", Usage: "bearer token sent to the server (PADDOCK_CLIENT_TOKEN)", Flag: "token", Cmds: clientCmds},
	)
	addCommand(20, newTaskCmd)
}

// clients returns API clients for the configured server.
func clients(app *App) (paddockv1connect.TaskServiceClient, paddockv1connect.ClusterServiceClient) {
	hc, url := serverHTTP(app, 15*time.Minute)
	return clientsAt(hc, url, app.Cfg.V.GetString("client.token"))
}

// clientsAt returns API clients for the server at url.
func clientsAt(hc *http.Client, url, tok string) (paddockv1connect.TaskServiceClient, paddockv1connect.ClusterServiceClient) {
	opts := []connect.ClientOption{connect.WithInterceptors(bearerInterceptor{tok})} // unary and streaming calls (taskwatch.go)
	return paddockv1connect.NewTaskServiceClient(hc, url, opts...), paddockv1connect.NewClusterServiceClient(hc, url, opts...)
}

// parseClass reads --class.
func parseClass(class string) (paddockv1.Class, error) {
	switch class {
	case "", "batch":
		return paddockv1.Class_CLASS_BATCH, nil
	case "online":
		return paddockv1.Class_CLASS_ONLINE, nil
	}
	return 0, usageError{fmt.Errorf("--class %q: use online or batch", class)}
}

func printProto(app *App, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(app.Out, string(b))
	return err
}

func stateName(s paddockv1.State) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_"))
}

func printTask(app *App, t *paddockv1.Task) {
	fmt.Fprintf(app.Out, "id:        %s\ntype:      %s\nstate:     %s\nattempt:   %d/%d\n", t.GetId(), t.GetSpec().GetType(),
		stateName(t.GetState()), t.GetAttempt(), t.GetSpec().GetMaxAttempts())
	if t.GetAgentId() != "" {
		fmt.Fprintf(app.Out, "agent:     %s (lease %d)\n", t.GetAgentId(), t.GetLeaseId())
	}
	if t.GetError() != "" {
		fmt.Fprintf(app.Out, "error:     %s\n", t.GetError())
	}
	if k := t.GetFailureKind(); k != paddockv1.FailureKind_FAILURE_KIND_UNSPECIFIED {
		fmt.Fprintf(app.Out, "failure:   %s\n", kindName(k))
	}
	for _, name := range sortedNames(t.GetSpec().GetInputs()) {
		fmt.Fprintf(app.Out, "input:     %s  inline  %s\n", name, humanize.IBytes(uint64(len(t.GetSpec().GetInputs()[name]))))
	}
	printBlobs(app, "input", t.GetSpec().GetInputBlobs())
	for _, name := range sortedNames(t.GetSpec().GetInputTasks()) {
		if _, resolved := t.GetSpec().GetInputBlobs()[name]; !resolved {
			fmt.Fprintf(app.Out, "input:     %s  from %s\n", name, t.GetSpec().GetInputTasks()[name])
		}
	}
	if t.GetState() == paddockv1.State_STATE_SUCCEEDED {
		fmt.Fprintf(app.Out, "sha256:    %s\noutput:    %s\n", t.GetOutputSha256(), preview(t.GetId(), t.GetOutput()))
		for _, name := range sortedNames(t.GetOutputs()) {
			fmt.Fprintf(app.Out, "output:    %s  inline  %s\n", name, humanize.IBytes(uint64(len(t.GetOutputs()[name]))))
		}
		printBlobs(app, "output", t.GetOutputBlobs())
	}
	for _, a := range t.GetAttempts() {
		kind := ""
		if k := a.GetFailureKind(); k != paddockv1.FailureKind_FAILURE_KIND_UNSPECIFIED {
			kind = "(" + kindName(k) + ") "
		}
		fmt.Fprintf(app.Out, "attempt %d: agent %s lease %d %s %dms %s%s\n", a.GetNumber(), a.GetAgentId(), a.GetLeaseId(),
			stateName(a.GetState()), a.GetUsage().GetWallMs(), kind, a.GetError())
	}
}

// kindName is a failure kind as printed: "crashed", "output_too_large".
func kindName(k paddockv1.FailureKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "FAILURE_KIND_"))
}

// previewMax is the longest output printTask shows whole.
const previewMax = 4 << 10

// preview shows an output: whole when it is text of at most previewMax bytes,
// else its size and the command that writes it whole.
func preview(id string, b []byte) string {
	switch {
	case len(b) == 0:
		return "(empty)"
	case len(b) <= previewMax && utf8.Valid(b) && !bytes.ContainsRune(b, 0):
		if s := string(b); !strings.Contains(strings.TrimSuffix(s, "\n"), "\n") {
			return strings.TrimSuffix(s, "\n")
		}
		return "\n" + strings.TrimSuffix(string(b), "\n")
	case utf8.Valid([]byte(clip(string(b), previewMax))) && !bytes.ContainsRune(b[:previewMax], 0):
		return fmt.Sprintf("%s (%s in all: paddock task output %s [-o FILE])", clip(string(b), previewMax), humanize.IBytes(uint64(len(b))), id)
	}
	return fmt.Sprintf("%s of binary data (paddock task output %s -o FILE)", humanize.IBytes(uint64(len(b))), id)
}

// clip cuts s to at most n bytes, at a rune boundary, marking a cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

func newTaskCmd(app *App) *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Submit and follow tasks on a Paddock server"}
	cmd.AddCommand(newTaskSubmitCmd(app), newTaskGetCmd(app), newTaskWaitCmd(app), newTaskCancelCmd(app), newTaskLsCmd(app), newTaskOutputCmd(app), newTaskLogsCmd(app))
	cmd.AddCommand(newTaskSubmitBatchCmd(app), newTaskRetryCmd(app), newTaskStreamCmd(app))
	return cmd
}

func newTaskSubmitCmd(app *App) *cobra.Command {
	var (
		typ, payload, payloadFile, class, key, tenant string
		inputs, inputBlobs, labels                    []string
		inlineMax                                     string
		inline, quiet                                 bool
		priority, maxAttempts                         int32
		timeout, schedTimeout                         time.Duration
		cpu, mem                                      int64
		wait, asJSON                                  bool
		waitFor                                       time.Duration
		file                                          string
	)
	cmd := &cobra.Command{
		Use:   "submit --type TYPE [--payload TEXT | --payload-file FILE] [--input name=FILE|name=@task:ID[/OUTPUT]]... [--input-blob name=DIGEST]... | submit -f PIPELINE.yaml",
		Short: "Submit a task (and with --wait, wait for it)",
		Long: `Submit a task. Inputs are named files the handler reads:

  --input name=FILE         small files (together at most --inline-max, default 1MiB) go
                            inline in the task; larger ones are uploaded as blobs first
                            (skipped when the server has them) and named in input_blobs;
  --input-blob name=DIGEST  a blob already on the server (paddock blob put FILE);
  --inline                  every --input inline, as before blobs existed (the server's
                            server.max_inline_bytes bounds payload plus inline inputs);
  --inline-max 0            every --input as a blob;
  --input name=@task:ID[/OUTPUT]
                            another task's output blob (its only one, or OUTPUT): the
                            task waits (state waiting) until that task succeeds, and
                            fails, naming it, if it ends otherwise.

With -f FILE, submits a pipeline: named stages (YAML or JSON) that read each other's
outputs as @stage:NAME[/OUTPUT], stored in one call (a cycle or an unknown stage stores
nothing); it prints each stage's name, task id and state:

  stages:
    - name: compress
      type: compress
      inputs: {in: ./data.csv}
    - name: checksum
      type: checksum.sha256
      inputs: {in: "@stage:compress/out"}`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file != "" {
				if typ != "" || len(inputs) > 0 || len(inputBlobs) > 0 || payload != "" || payloadFile != "" {
					return usageError{errors.New("-f describes every stage: give the type, payload and inputs in the file, not as flags")}
				}
				return submitPipeline(cmd.Context(), app, file, quiet, wait, asJSON, waitFor)
			}
			spec := &paddockv1.TaskSpec{Type: typ, Payload: []byte(payload), Priority: priority, MaxAttempts: maxAttempts,
				TimeoutMs: timeout.Milliseconds(), IdempotencyKey: key, Tenant: tenant, ScheduleToStartTimeoutMs: schedTimeout.Milliseconds()}
			if schedTimeout < 0 {
				return usageError{fmt.Errorf("--schedule-timeout %v is negative: give the longest wait for a first start, e.g. 5m (0: the server default)", schedTimeout)}
			}
			if payloadFile != "" {
				if payload != "" {
					return usageError{errors.New("give --payload or --payload-file, not both")}
				}
				b, err := readFileOrStdin(payloadFile)
				if err != nil {
					return fmt.Errorf("--payload-file: %w", err)
				}
				spec.Payload = b
			}
			if payloadFile == "-" {
				for _, in := range inputs {
					if strings.HasSuffix(in, "=-") {
						return usageError{fmt.Errorf("--input %s and --payload-file -: only one of them can read stdin", in)}
					}
				}
			}
			if err := addInputs(cmd.Context(), app, blobClient(app), spec, inputs, inputBlobs, inline, inlineMax, quiet); err != nil {
				return err
			}
			var err error
			if spec.Class, err = parseClass(class); err != nil {
				return err
			}
			if cpu != 0 || mem != 0 || len(labels) > 0 {
				spec.Requirements = &paddockv1.Requirements{CpuMillis: cpu, MemoryBytes: mem}
				for _, l := range labels {
					k, v, ok := strings.Cut(l, "=")
					if !ok {
						return usageError{fmt.Errorf("--label %q: want key=value", l)}
					}
					if spec.Requirements.Labels == nil {
						spec.Requirements.Labels = map[string]string{}
					}
					spec.Requirements.Labels[k] = v
				}
			}
			tc, _ := clients(app)
			r, err := tc.Submit(cmd.Context(), connect.NewRequest(&paddockv1.SubmitRequest{Task: spec}))
			if err != nil {
				return err
			}
			t := r.Msg.GetTask()
			if w := r.Msg.GetWarning(); w != "" {
				fmt.Fprintf(app.Err, "warning: task %s: %s\n", t.GetId(), w)
			}
			if wait {
				// The id first, so a wait that is stopped or times out still leaves it.
				fmt.Fprintf(app.Err, "task %s submitted; waiting up to %v for it to end (Ctrl-C stops the wait, not the task)\n", t.GetId(), waitFor)
				w, err := waitTask(cmd.Context(), tc, t.GetId(), waitFor)
				if err != nil {
					return fmt.Errorf("waiting for task %s: %w", t.GetId(), err)
				}
				t = w
			}
			if asJSON {
				return printProto(app, t)
			}
			if !wait {
				if !r.Msg.GetCreated() {
					fmt.Fprintf(app.Err, "idempotency key %q matched an existing task\n", key)
				}
				fmt.Fprintln(app.Out, t.GetId())
				return nil
			}
			printTask(app, t)
			return taskExit(t)
		},
	}
	f := cmd.Flags()
	f.StringVar(&typ, "type", "", "task type (required without -f)")
	f.StringVarP(&file, "file", "f", "", "submit the pipeline (named stages, YAML or JSON) in this file")
	f.StringVar(&payload, "payload", "", "payload text")
	f.StringVar(&payloadFile, "payload-file", "", "read the payload from a file (- for stdin)")
	f.StringArrayVar(&inputs, "input", nil, "named input name=FILE: inline when small, else uploaded as a blob (repeatable)")
	f.StringArrayVar(&inputBlobs, "input-blob", nil, "named input name=DIGEST: a blob the server has (repeatable)")
	f.BoolVar(&inline, "inline", false, "send every --input inline (no blobs)")
	f.StringVar(&inlineMax, "inline-max", "1MiB", "--input files go inline while their total stays within this; larger ones become blobs (0: all blobs)")
	f.BoolVarP(&quiet, "quiet", "q", false, "no upload progress on stderr")
	f.Int32Var(&priority, "priority", 0, "priority -100..100 (higher first)")
	f.StringVar(&class, "class", "batch", "online or batch")
	f.DurationVar(&timeout, "timeout", 0, "timeout of one attempt (0: server default)")
	f.DurationVar(&schedTimeout, "schedule-timeout", 0, "fail the task if no agent starts it within this long after the submit, e.g. 5m (0: the server default, server.schedule_to_start_timeout)")
	f.Int32Var(&maxAttempts, "max-attempts", 0, "attempts before the task is dead (0: server default)")
	f.StringVar(&key, "idempotency-key", "", "idempotency key: the same key returns the same task")
	f.StringVar(&tenant, "tenant", "", "tenant (default \"default\")")
	f.StringArrayVar(&labels, "label", nil, "required agent label key=value (repeatable)")
	f.Int64Var(&cpu, "cpu-millis", 0, "required CPU in thousandths of a core")
	f.Int64Var(&mem, "memory", 0, "required memory in bytes")
	f.BoolVar(&wait, "wait", false, "print the id on stderr, wait until the task ends (at most --wait-timeout) and print it; exit 1 unless it succeeded, also when still queued or running at the timeout (the task goes on)")
	f.DurationVar(&waitFor, "wait-timeout", 10*time.Minute, "longest --wait")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// taskExit makes a failed task a non-zero exit.
func taskExit(t *paddockv1.Task) error {
	switch t.GetState() {
	case paddockv1.State_STATE_SUCCEEDED:
		return nil
	case paddockv1.State_STATE_FAILED, paddockv1.State_STATE_DEAD, paddockv1.State_STATE_CANCELLED:
		return fmt.Errorf("task %s is %s", t.GetId(), stateName(t.GetState()))
	}
	return fmt.Errorf("task %s is still %s", t.GetId(), stateName(t.GetState()))
}

func waitTask(ctx context.Context, tc paddockv1connect.TaskServiceClient, id string, d time.Duration) (*paddockv1.Task, error) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		chunk := min(left, 5*time.Minute)
		r, err := tc.Wait(ctx, connect.NewRequest(&paddockv1.WaitRequest{Id: id, TimeoutMs: max(chunk.Milliseconds(), 1)}))
		if err != nil {
			return nil, err
		}
		if r.Msg.GetTerminal() || time.Now().After(deadline) {
			return r.Msg.GetTask(), nil
		}
	}
}

func newTaskGetCmd(app *App) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "get ID", Short: "Show a task with its attempts", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, _ := clients(app)
			r, err := tc.Get(cmd.Context(), connect.NewRequest(&paddockv1.GetRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			if asJSON { // the Task, as before GetResponse had a warning (that goes to stderr)
				if w := r.Msg.GetWarning(); w != "" {
					fmt.Fprintln(app.Err, "warning: "+w)
				}
				return printProto(app, r.Msg.GetTask())
			}
			printTask(app, r.Msg.GetTask())
			printStages(cmd.Context(), app, tc, r.Msg.GetTask())
			if r.Msg.GetTask().GetState() == paddockv1.State_STATE_QUEUED {
				return printWhy(cmd.Context(), app, tc, args[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printWhy prints why a queued task is still queued (TaskService.Explain).
func printWhy(ctx context.Context, app *App, tc paddockv1connect.TaskServiceClient, id string) error {
	r, err := tc.Explain(ctx, connect.NewRequest(&paddockv1.ExplainRequest{Id: id}))
	if err != nil {
		return fmt.Errorf("explaining why task %s is queued: %w", id, err)
	}
	for _, why := range r.Msg.GetReasons() {
		fmt.Fprintf(app.Out, "why:       %s\n", why.GetMessage())
	}
	return nil
}

func newTaskWaitCmd(app *App) *cobra.Command {
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: "wait ID", Short: "Wait until a task ends (exit 1 unless it succeeded)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, _ := clients(app)
			t, err := waitTask(cmd.Context(), tc, args[0], timeout)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printProto(app, t); err != nil {
					return err
				}
			} else {
				printTask(app, t)
			}
			return taskExit(t)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "longest wait")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTaskCancelCmd(app *App) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a task", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tc, _ := clients(app)
			r, err := tc.Cancel(cmd.Context(), connect.NewRequest(&paddockv1.CancelRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			fmt.Fprintf(app.Out, "%s %s\n", r.Msg.GetTask().GetId(), stateName(r.Msg.GetTask().GetState()))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the CancelResponse as JSON")
	return cmd
}

func newTaskLsCmd(app *App) *cobra.Command {
	var state, typ, tenant, page string
	var limit int32
	var asJSON, watch bool
	cmd := &cobra.Command{
		Use: "ls", Short: "List tasks, newest first (--watch: and keep the list up to date)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch && page != "" {
				return usageError{errors.New("--page: a watch shows the newest tasks; drop --page, or drop --watch to read older pages")}
			}
			req := &paddockv1.ListRequest{Type: typ, Tenant: tenant, Limit: limit, PageToken: page}
			if state != "" {
				v, ok := paddockv1.State_value["STATE_"+strings.ToUpper(state)]
				if !ok {
					return usageError{fmt.Errorf("--state %q: use queued, leased, running, succeeded, failed, cancelled or dead", state)}
				}
				req.State = paddockv1.State(v)
			}
			if watch {
				return watchTasks(cmd.Context(), app, &paddockv1.WatchTasksRequest{State: req.State, Type: typ, Tenant: tenant, Limit: limit}, asJSON)
			}
			tc, _ := clients(app)
			r, err := tc.List(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			if asJSON {
				return printProto(app, r.Msg)
			}
			tw := tabwriter.NewWriter(app.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, taskRowHeader)
			for _, t := range r.Msg.GetTasks() {
				taskRow(tw, t)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if r.Msg.GetNextPageToken() != "" {
				fmt.Fprintf(app.Err, "more: --page %s\n", r.Msg.GetNextPageToken())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only tasks in this state")
	f.StringVar(&typ, "type", "", "only tasks of this type")
	f.StringVar(&tenant, "tenant", "", "only tasks of this tenant")
	f.Int32Var(&limit, "limit", 50, "page size (at most 1000)")
	f.StringVar(&page, "page", "", "page token from the previous page")
	f.BoolVar(&asJSON, "json", false, "print JSON (with --watch: one JSON object per line, the first list then each change)")
	f.BoolVar(&watch, "watch", false, "keep the list on screen and update it as tasks change (until Ctrl-C)")
	return cmd
}

// taskRowHeader heads the rows of taskRow.
const taskRowHeader = "ID\tTYPE\tSTATE\tATTEMPT\tAGENT\tCREATED\tERROR"

// taskRow writes t as one row of task ls.
func taskRow(w io.Writer, t *paddockv1.Task) {
	fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.GetId(), t.GetSpec().GetType(), stateName(t.GetState()), t.GetAttempt(),
		t.GetAgentId(), time.UnixMilli(t.GetCreatedAtUnixMs()).Format(time.RFC3339), clip(t.GetError(), 200))
}
