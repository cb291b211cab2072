package session

import (
	"context"

	agentv1 "github.com/paddockvm/paddock/api/agent/v1"
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
	return result(e.r.Execute(ctx, runnerTask(t)))
}

// runnerTask is t as a runner.Task.
func runnerTask(t Task) runner.Task {
	rt := runner.Task{ID: t.ID, Type: t.Type, Payload: t.Payload, Inputs: t.Inputs, Attempt: t.Attempt, Deadline: t.Deadline,
		OutputDir: t.OutputDir, MaxOutputBytes: t.MaxOutputBytes}
	if t.OnLog != nil {
		rt.OnLog = func(l runner.LogLine) {
			t.OnLog(&agentv1.LogLine{UnixNanos: l.Time.UnixNano(), Level: l.Level, Text: l.Text})
		}
	}
	if len(t.InputFiles) > 0 {
		rt.InputFiles = make(map[string]runner.InputFile, len(t.InputFiles))
		for name, f := range t.InputFiles {
			rt.InputFiles[name] = runner.InputFile{Path: f.Path, Size: f.Size, Digest: f.Digest}
		}
	}
	return rt
}

// result is the runner's result as the session's.
func result(res runner.Result) Result {
	out := Result{Output: res.Output, Outputs: res.Outputs, Error: res.Error, Retryable: res.Retryable, Kind: reasonKinds[res.Reason],
		Usage: Usage{Wall: res.Usage.Wall, CPU: res.Usage.CPU}, Log: taskLog(res.Logs)}
	if len(res.OutputFiles) > 0 {
		out.OutputFiles = make(map[string]OutputFile, len(res.OutputFiles))
		for name, f := range res.OutputFiles {
			out.OutputFiles[name] = OutputFile{Size: f.Size, Digest: f.Digest}
		}
	}
	return out
}

// reasonKinds maps the runner's classification of a failed call to the report's kind.
var reasonKinds = map[runner.Reason]agentv1.FailureKind{
	runner.ReasonHandlerError:   agentv1.FailureKind_FAILURE_KIND_HANDLER_ERROR,
	runner.ReasonCrashed:        agentv1.FailureKind_FAILURE_KIND_CRASHED,
	runner.ReasonTimeout:        agentv1.FailureKind_FAILURE_KIND_TIMEOUT,
	runner.ReasonCancelled:      agentv1.FailureKind_FAILURE_KIND_CANCELLED,
	runner.ReasonOutputTooLarge: agentv1.FailureKind_FAILURE_KIND_OUTPUT_TOO_LARGE,
	runner.ReasonUnknownType:    agentv1.FailureKind_FAILURE_KIND_HANDLER_UNAVAILABLE,
	runner.ReasonUnavailable:    agentv1.FailureKind_FAILURE_KIND_HANDLER_UNAVAILABLE,
	runner.ReasonPanic:          agentv1.FailureKind_FAILURE_KIND_PANIC,
	runner.ReasonBadOutput:      agentv1.FailureKind_FAILURE_KIND_BAD_OUTPUT,
}

var _ BatchExecutor = runnerExecutor{}

// ExecuteBatch runs calls through runner.ExecuteBatch: the tasks of one handler go
// to it in one HandleBatch call.
func (e runnerExecutor) ExecuteBatch(ctx context.Context, calls []BatchCall, done func(int, Result)) {
	e.ExecuteBatchSettled(ctx, calls, done, nil)
}

var _ settlingExecutor = runnerExecutor{}

// ExecuteBatchSettled is ExecuteBatch with runner.ExecuteBatchSettled's settled.
func (e runnerExecutor) ExecuteBatchSettled(ctx context.Context, calls []BatchCall, done func(int, Result), settled func()) {
	rc := make([]runner.Call, len(calls))
	for i, c := range calls {
		rc[i] = runner.Call{Ctx: c.Ctx, Task: runnerTask(c.Task)}
	}
	e.r.ExecuteBatchSettled(ctx, rc, func(i int, res runner.Result) { done(i, result(res)) }, settled)
}
