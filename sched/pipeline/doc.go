// Package pipeline holds the logic of task pipelines (issue 11): a task may take another
// task's output as an input ("@task:ID" or "@task:ID/OUTPUT"), and a small DAG of named
// stages may be submitted at once ("@stage:NAME[/OUTPUT]").
//
// It decides, and the server acts: ParseRef reads a reference, Order checks a DAG of
// stages (unknown stages, cycles — the error names the cycle) and returns the order to
// store them in, and Decide says what a waiting task does given its upstream tasks as
// they are now: keep waiting, become queued with the upstreams' output blobs as its
// inputs, or fail with a reason naming the upstream (it ended failed, dead or
// cancelled, is gone, or did not produce the output). The server (sched/pipelines.go)
// keeps the waiting set, reloads it from the store at start, and applies Decide's
// answer with a compare-and-swap from state waiting.
//
// The tests are table tests of pure logic (go test ./sched/pipeline/); the server's
// tests run pipelines end to end with real agents, handlers and stores
// (go test ./sched/ -run Pipeline).
package pipeline
