// Package runner is the agent's side of task handlers: it starts each handler
// binary once (after checking its sha256 against the image manifest, with
// go-plugin's SecureConfig and AutoMTLS) — all in parallel in New, or, with
// Config.Lazy and the handler's types known from the manifest, on its first call
// (it must then serve exactly those types); a handler the image holds compressed
// (HandlerSpec.Packed) is unpacked to its path just before its first start — sends it concurrent calls, and keeps it
// alive — a crashed handler fails its calls in flight as retryable ("handler
// crashed") and is restarted with backoff; a call past its deadline is
// cancelled, and a handler that ignores the cancellation for longer than the
// kill grace is killed and restarted. Outputs larger than the configured limit
// are refused.
//
// Inputs and outputs of any size never cross the plugin's gRPC connection: a
// Task names input files (InputFiles) and an output directory (OutputDir), and
// the Result lists the output files the handler wrote there (OutputFiles, with
// the size and sha256 its SDK computed while writing). The runner checks each
// reported file exists in OutputDir with the reported size and a valid name, and
// fails the task (ReasonBadOutput) naming the file otherwise.
//
// Task logs: the lines a handler logs during a call come back in Result.Logs, bounded
// by Config.MaxTaskLogBytes (the oldest dropped and counted). Records of the SDK's
// loggers name their task (sdk.LogKeyTask) and go to that call; other lines on the
// handler's stderr (go-plugin's log pipe; an unparseable slog JSON line keeps its own
// level) and on its forwarded stdout/stderr go to the call in flight when there is
// exactly one. When a call logged, the SDK (version 2 on) ends its lines with a
// sdk.LogKeyCallEnd line and says so (HandleResponse.log_end); Execute then waits for
// that line (at most 2 s), since it travels on another pipe than the answer.
//
// Handler processes run in their own process group and, on Linux, with a
// parent-death signal (SIGKILL): an agent that dies, even by SIGKILL, takes its
// handlers with it.
//
// The tests build the example handlers (plugins/handlers/...) into a temporary
// directory and run them as real subprocesses:
//
//	CGO_ENABLED=0 go test -count=1 ./plugins/runner
//	go test -run '^$' -bench . ./plugins/runner   # calls/s and latency through the plugin boundary
package runner
