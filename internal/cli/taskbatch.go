package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/sched"
)

func newTaskSubmitBatchCmd(app *App) *cobra.Command {
	var chunk int
	cmd := &cobra.Command{
		Use:   "submit-batch FILE|-",
		Short: "Submit many tasks from JSON lines (one TaskSpec a line), a batch per durable write",
		Long: `Submit the tasks of FILE (or stdin for -): one task spec a line, in the JSON form of the
API's TaskSpec, e.g.

  {"type": "checksum", "inputs": {"a.txt": "aGVsbG8K"}}
  {"type": "test.echo", "payload": "eA==", "idempotencyKey": "job-7"}

(bytes are base64). The tasks go to the server in SubmitBatch calls of --chunk tasks:
each call is one durable write, all or nothing. A bad line stops before anything of
its chunk is stored, naming the line. Prints each task's id, one a line, in order.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if chunk < 1 || chunk > sched.MaxBatchTasks {
				return usageError{fmt.Errorf("--chunk %d: want 1 to %d", chunk, sched.MaxBatchTasks)}
			}
			var in io.Reader = stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("opening the task file: %w", err)
				}
				defer f.Close()
				in = f
			}
			tc, _ := clients(app)
			sc := bufio.NewScanner(in)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			var specs []*paddockv1.TaskSpec
			var lines []int
			total, line := 0, 0
			flush := func() error {
				if len(specs) == 0 {
					return nil
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
				defer cancel()
				r, err := tc.SubmitBatch(ctx, connect.NewRequest(&paddockv1.SubmitBatchRequest{Tasks: specs}))
				if err != nil {
					return fmt.Errorf("submitting the tasks of lines %d–%d (%d submitted before them): %w", lines[0], lines[len(lines)-1], total, batchLineErr(err, lines))
				}
				for _, res := range r.Msg.GetResults() {
					fmt.Fprintln(app.Out, res.GetTask().GetId())
				}
				total += len(specs)
				specs, lines = specs[:0], lines[:0]
				return nil
			}
			for sc.Scan() {
				line++
				text := strings.TrimSpace(sc.Text())
				if text == "" {
					continue
				}
				sp := &paddockv1.TaskSpec{}
				if err := protojson.Unmarshal([]byte(text), sp); err != nil {
					return fmt.Errorf("line %d: not a task spec in JSON (%v); e.g. {\"type\": \"checksum\", \"payload\": \"aGVsbG8=\"} (%d tasks submitted before it)", line, err, total)
				}
				specs = append(specs, sp)
				lines = append(lines, line)
				if len(specs) == chunk {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if err := sc.Err(); err != nil {
				return fmt.Errorf("reading the task file after line %d: %w", line, err)
			}
			if err := flush(); err != nil {
				return err
			}
			fmt.Fprintf(app.Err, "submitted %d tasks\n", total)
			return nil
		},
	}
	cmd.Flags().IntVar(&chunk, "chunk", 1000, "tasks per SubmitBatch call (one durable write each)")
	return cmd
}

// batchLineErr rewrites the server's "tasks[i]…" in err as the file's line number.
func batchLineErr(err error, lines []int) error {
	msg := err.Error()
	var i int
	if k := strings.Index(msg, "tasks["); k >= 0 {
		if _, serr := fmt.Sscanf(msg[k:], "tasks[%d]", &i); serr == nil && i >= 0 && i < len(lines) {
			return fmt.Errorf("line %d: %w", lines[i], err)
		}
	}
	return err
}
