// Package pipeline holds the logic of task pipelines (issue 11): a task may take another
// task's output as an input ("@task:ID" or "@task:ID/OUTPUT"), and a small DAG of named
// stages may be submitted at once ("@stage:NAME[/OUTPUT]").
//
// It decides, and the server acts: ParseRef reads a reference, Order checks a DAG of
// stages (unknown stages, cycles — the error names the cycle) and returns the order to
// store them in, and Decide says what a waiting task does given its upstream tasks as
// they are now: keep waiting, become queued with the upstreams' outputs as its
// inputs, or fail with a reason naming the upstream (it ended failed, dead or
// cancelled, is gone, or did not produce the output). The server (sched/pipelines.go)
// keeps the waiting set, reloads it from the store at start, and applies Decide's
// answer with a compare-and-swap from state waiting.
//
// An upstream's output is a blob (an output file) or inline bytes: "@task:ID" is the
// task's one output blob, or its inline output when it wrote no file; "@task:ID/NAME"
// is its output blob NAME, else its inline output NAME. Inline outputs become the
// downstream's inline inputs, within server.max_inline_bytes (past it the downstream
// fails, naming the limit and the fix: write the result as a file).
//
// The tests are table tests of pure logic (go test ./sched/pipeline/); the server's
// tests run pipelines end to end with real agents, handlers and stores
// (go test ./sched/ -run Pipeline).
package pipeline
