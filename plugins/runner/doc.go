// Package runner is the agent's side of task handlers: it starts each handler
// binary once (after checking its sha256 against the image manifest, just before
// exec — unless HandlerSpec.Verified: on an image's read-only handler disk, checked by
// the host — and connecting over mutual TLS) — all in parallel in New, or, with
// Config.Lazy and the handler's types known from the manifest, on its first call
// (it must then serve exactly those types); a handler the image holds compressed
// (HandlerSpec.Packed: zstd, or gzip in older images) is unpacked to its path just
// before its first start, checked as it is written (unpack.go) — sends it concurrent calls, and keeps it
// alive — a crashed handler fails its calls in flight as retryable ("handler
// crashed") and is restarted with backoff; a call past its deadline is
// cancelled, and a handler that ignores the cancellation for longer than the
// kill grace is killed and restarted. Outputs larger than the configured limit
// are refused.
//
// Batches: ExecuteBatch sends the tasks of one handler in HandleBatch calls (up to
// MaxBatch each; the agent's session sends at most 64): one gRPC call and one stream
// of answers for many tasks instead of a call each, the answers coming back as each
// task ends. Each task keeps Execute's guarantees: its own deadline and context (its
// end gives it a timeout or cancelled result at once, tells the handler with
// CancelCall, and kills a handler still running it KillGrace later), its own error,
// usage and logs; a crash fails every task of the batch still running as "handler
// crashed". A handler without HandleBatch answers Unimplemented: the runner
// remembers that for the process and sends one Handle per task, all at once.
// BenchmarkEchoBatch compares the two on CPU per task.
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
// handler's stderr (go-plugin's log pipe; a slog JSON line keeps its own level too)
// and on its forwarded stdout/stderr go to the call in flight when there is
// exactly one. When a call logged, the SDK (version 2 on) ends its lines with a
// sdk.LogKeyCallEnd line and says so (HandleResponse.log_end); Execute then waits for
// that line (at most 2 s), since it travels on another pipe than the answer.
//
// A handler's start (exec until its Describe answers) is bounded by StartTimeout
// counted in time its process uses no CPU, and 10 StartTimeouts in all (startclock.go):
// in a guest starved of CPU handlers start slowly but steadily, and were refused after
// a minute of wall time. The start's deadline alone bounds the connection to the
// handler: gRPC's own 20 s for each connection attempt (dial and TLS handshake) is
// raised to the longest start, and Describe waits for the connection to be ready
// (WaitForReady), so a handshake that takes long or fails once is retried within the
// start; in the 40-guest burst of 2026-12-02 starts died with "authentication
// handshake failed: context deadline exceeded" at gRPC's 20 s. A handler that exits
// during its start ends the wait at once. TestSlowTLSHandshakeIsWaitedFor (a TLS
// handshake answered 25 s late), TestExitInStartEndsDescribe.
//
// Handler processes run in their own process group and, on Linux, with a
// parent-death signal (SIGKILL): an agent that dies, even by SIGKILL, takes its
// handlers with it.
//
// # Its own go-plugin client
//
// Handlers are ordinary hashicorp/go-plugin servers (plugins/sdk, or go-plugin
// used directly), but the runner does not use go-plugin's Client: plugin.go is a
// gRPC-only client of go-plugin's documented protocol. It sets the magic cookie,
// PLUGIN_PROTOCOL_VERSIONS and PLUGIN_CLIENT_CERT (AutoMTLS: a self-signed P-256
// certificate, one per Runner, made on first use or ahead by PrepareCert) in the
// handler's environment; reads the handshake
// line core|app|network|addr|grpc|cert from its stdout (within
// Config.StartTimeout), refusing a handler that prints anything else, speaks
// another core or handler protocol version, serves net/rpc, or sends no server
// certificate, each with an error naming what it saw and quoting the handler's
// last stderr lines when it exited; dials addr over TLS trusting only that
// certificate; copies go-plugin's GRPCStdio stream (the handler's stdout and
// stderr after Serve) and parses its stderr log lines as go-plugin's client does;
// and stops it with GRPCController.Shutdown, then SIGKILL after 2 s. It opens no
// GRPCBroker stream (no handler uses the broker) and does not support reattach.
// The binary's sha256 is checked just before exec, as go-plugin's SecureConfig did.
//
// Why by hand: go-plugin's client package also links net/rpc (which parses its
// debug page's html/template at init), encoding/gob, yamux, go-hclog, debug/elf and
// its command runner, none of which a gRPC-only client uses, and the agent's
// binary is held in every guest's memory (the initramfs, and mapped by the agent:
// most of its RSS). Dropping them took the agent from 11.6 to 10.0 MB and its RSS
// in an idle guest down by about 1.7 MiB of file pages and 0.4 MiB of heap
// (docs/operations.md, "Agent RSS"). The cost is
// following go-plugin's protocol ourselves: TestPlainGoPluginHandler runs a handler
// built with go-plugin alone (no plugins/sdk) through this client, and
// TestHandshakeErrors each way a handshake can fail. The constants both sides
// must agree on live in plugins/internal/contract (no go-plugin import), which
// plugins/sdk re-exports.
//
// # A first start, and what it costs
//
// The "handler started" line gives the start's parts in ms: unpack_ms, verify_ms (the
// sha256 before exec; 0 when the unpack checked the binary), cert_ms (0 once the
// runner has its certificate), exec_to_handshake_ms (the handler's runtime and
// package init, its own certificate, listening), tls_ms (the TLS handshake),
// describe_ms (handshake line to Describe's answer, tls_ms included) and start_ms (all
// of it). Under TCG a first task on a 12.8 MB handler waited about 20 s alone and
// about 55 s four at once (2 shared cores), its second 0.4 s
// (internal/e2e BenchmarkFirstTask, which reports these parts). What was cut: zstd
// instead of gzip (about 6x less CPU to unpack), no second pass over the binary for
// its sha256 when the zstd frame's checksum was checked, the certificate made once
// per runner and ahead of the first task, and P-256 instead of go-plugin's P-521 on
// the handler's side (plugins/sdk; a handler built with go-plugin alone still answers
// with P-521 and works).
//
// The tests build the example handlers (plugins/handlers/...) into a temporary
// directory and run them as real subprocesses:
//
//	CGO_ENABLED=0 go test -count=1 ./plugins/runner
//	go test -run '^$' -bench . ./plugins/runner   # calls/s and latency through the plugin boundary
package runner
