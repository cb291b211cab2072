package session

import (
	"context"

	"github.com/paddockvm/paddock/plugins/runner"
)

// runnerExecutor runs tasks through a plugins/runner.Runner (real handler processes).
type runnerExecutor struct{ r *runner.Runner }

var _ Executor = runnerExecutor{}

// RunnerExecutor adapts r to Executor. The caller closes r after the session ends.
func RunnerExecutor(r *runner.Runner) Executor { return runnerExecutor{r} }

func (e runnerExecutor) Types() []TaskType {
	var out []TaskType
	for _, t := range e.r.Types() {
		out = append(out, TaskType{Name: t.Name, Version: t.Version, Concurrency: t.Concurrency})
	}
	return out
}

func (e runnerExecutor) Execute(ctx context.Context, t Task) Result {
	rt := runner.Task{ID: t.ID, Type: t.Type, Payload: t.Payload, Inputs: t.Inputs, Attempt: t.Attempt, Deadline: t.Deadline,
		OutputDir: t.OutputDir, MaxOutputBytes: t.MaxOutputBytes}
	if len(t.InputFiles) > 0 {
		rt.InputFiles = make(map[string]runner.InputFile, len(t.InputFiles))
		for name, f := range t.InputFiles {
			rt.InputFiles[name] = runner.InputFile{Path: f.Path, Size: f.Size, Digest: f.Digest}
		}
	}
	res := e.r.Execute(ctx, rt)
	out := Result{Output: res.Output, Outputs: res.Outputs, Error: res.Error, Retryable: res.Retryable,
		Usage: Usage{Wall: res.Usage.Wall, CPU: res.Usage.CPU}}
	if len(res.OutputFiles) > 0 {
		out.OutputFiles = make(map[string]OutputFile, len(res.OutputFiles))
		for name, f := range res.OutputFiles {
			out.OutputFiles[name] = OutputFile{Size: f.Size, Digest: f.Digest}
		}
	}
	return out
}
