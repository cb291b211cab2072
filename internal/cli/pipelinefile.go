package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.yaml.in/yaml/v3"

	paddockv1 "github.com/paddockvm/paddock/api/paddock/v1"
	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched/pipeline"
)

// pipelineFile is the document `paddock task submit -f FILE` reads (YAML or JSON):
//
//	stages:
//	  - name: compress
//	    type: compress
//	    inputs: {in: ./data.csv}             # a file (uploaded as a blob), relative to FILE
//	  - name: checksum
//	    type: checksum.sha256
//	    inputs: {in: "@stage:compress/out"}  # another stage's output (or @task:ID[/OUTPUT])
//
// An input value is "@stage:NAME[/OUTPUT]" or "@task:ID[/OUTPUT]" (another task's output),
// "sha256:<hex>" (a blob the server has), or a file path.
type pipelineFile struct {
	Stages []pipelineStage `yaml:"stages"`
}

type pipelineStage struct {
	Name        string            `yaml:"name"`
	Type        string            `yaml:"type"`
	Payload     string            `yaml:"payload"`
	Inputs      map[string]string `yaml:"inputs"`
	Priority    int32             `yaml:"priority"`
	Class       string            `yaml:"class"`
	Timeout     time.Duration     `yaml:"timeout"`
	MaxAttempts int32             `yaml:"max_attempts"`
	Tenant      string            `yaml:"tenant"`
}

// readPipeline reads and checks path and uploads the stages' file inputs; the server
// checks the rest (names, the DAG, each spec) and its errors name the stage.
func readPipeline(ctx context.Context, app *App, path string, quiet bool) (*paddockv1.SubmitPipelineRequest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-f %s: %w", path, err)
	}
	var pf pipelineFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&pf); err != nil {
		return nil, usageError{fmt.Errorf("-f %s: %w (want stages: [{name, type, payload, inputs, priority, class, timeout, max_attempts, tenant}])", path, err)}
	}
	if len(pf.Stages) == 0 {
		return nil, usageError{fmt.Errorf("-f %s: no stages: list them under stages:", path)}
	}
	req := &paddockv1.SubmitPipelineRequest{}
	for i, st := range pf.Stages {
		spec := &paddockv1.TaskSpec{Type: st.Type, Payload: []byte(st.Payload), Priority: st.Priority, TimeoutMs: st.Timeout.Milliseconds(),
			MaxAttempts: st.MaxAttempts, Tenant: st.Tenant}
		switch st.Class {
		case "", "batch":
			spec.Class = paddockv1.Class_CLASS_BATCH
		case "online":
			spec.Class = paddockv1.Class_CLASS_ONLINE
		default:
			return nil, usageError{fmt.Errorf("-f %s: stages[%d] (%s).class %q: use online or batch", path, i, st.Name, st.Class)}
		}
		var files, blobs []string
		for _, name := range sortedNames(st.Inputs) {
			v := st.Inputs[name]
			switch {
			case strings.HasPrefix(v, "sha256:"):
				blobs = append(blobs, name+"="+v)
			case strings.HasPrefix(v, "@"):
				files = append(files, name+"="+v) // addInputs checks and keeps references
			default:
				if !filepath.IsAbs(v) {
					v = filepath.Join(filepath.Dir(path), v)
				}
				files = append(files, name+"="+v)
			}
		}
		if err := addInputs(ctx, app, blobClient(app), spec, files, blobs, false, "0", quiet); err != nil {
			var ue usageError
			if errors.As(err, &ue) {
				return nil, usageError{fmt.Errorf("-f %s: stages[%d] (%s): %w", path, i, st.Name, ue.error)}
			}
			return nil, fmt.Errorf("-f %s: stages[%d] (%s): %w", path, i, st.Name, err)
		}
		req.Stages = append(req.Stages, &paddockv1.Stage{Name: st.Name, Task: spec})
	}
	return req, nil
}

// submitPipeline submits the pipeline in path and prints each stage's id (with wait,
// waits for every stage and prints each).
func submitPipeline(ctx context.Context, app *App, path string, quiet, wait, asJSON bool, waitFor time.Duration) error {
	req, err := readPipeline(ctx, app, path, quiet)
	if err != nil {
		return err
	}
	tc, _ := clients(app)
	r, err := tc.SubmitPipeline(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	stages := r.Msg.GetStages()
	if wait {
		for _, st := range stages {
			fmt.Fprintf(app.Err, "stage %s: task %s submitted\n", st.GetName(), st.GetTask().GetId())
		}
		for _, st := range stages {
			t, err := waitTask(ctx, tc, st.GetTask().GetId(), waitFor)
			if err != nil {
				return fmt.Errorf("waiting for stage %s (task %s): %w", st.GetName(), st.GetTask().GetId(), err)
			}
			st.Task = t
		}
	}
	if asJSON {
		return printProto(app, r.Msg)
	}
	var failed error
	for _, st := range stages {
		t := st.GetTask()
		fmt.Fprintf(app.Out, "%-20s %s  %s\n", st.GetName(), t.GetId(), stateName(t.GetState()))
		if wait && failed == nil {
			failed = taskExit(t)
		}
	}
	return failed
}

// printStages shows the upstream stages of t (the tasks its input_tasks name, and
// theirs, nearest first) with their states, so `paddock task get` of a pipeline's last
// stage shows the whole chain.
func printStages(ctx context.Context, app *App, tc paddockv1connect.TaskServiceClient, t *paddockv1.Task) {
	if len(t.GetSpec().GetInputTasks()) == 0 {
		return
	}
	fmt.Fprintln(app.Out, "upstream stages:")
	seen := map[string]bool{t.GetId(): true}
	queue := []*paddockv1.Task{t}
	for len(queue) > 0 && len(seen) <= 100 {
		cur := queue[0]
		queue = queue[1:]
		for _, name := range sortedNames(cur.GetSpec().GetInputTasks()) {
			ref := cur.GetSpec().GetInputTasks()[name]
			r, err := pipeline.ParseRef(ref)
			if err != nil || seen[r.Name] {
				continue
			}
			seen[r.Name] = true
			g, err := tc.Get(ctx, connect.NewRequest(&paddockv1.GetRequest{Id: r.Name}))
			if err != nil {
				fmt.Fprintf(app.Out, "  %s <- %s: %v\n", name, ref, err)
				continue
			}
			up := g.Msg.GetTask()
			line := fmt.Sprintf("  %-12s <- %s  %s  %s", name, up.GetId(), up.GetSpec().GetType(), stateName(up.GetState()))
			if up.GetError() != "" {
				line += "  " + clip(up.GetError(), 80)
			}
			fmt.Fprintln(app.Out, line)
			queue = append(queue, up)
		}
	}
}
