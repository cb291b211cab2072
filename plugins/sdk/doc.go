// Package sdk is what a Paddock task handler imports: the Handler interface, the
// error helpers that say whether a retry can help, and Serve, the one call a
// handler's main makes.
//
// A handler is a separate program. The Paddock agent starts it as a
// hashicorp/go-plugin plugin (gRPC, AutoMTLS — the SDK answers with a P-256
// certificate, not go-plugin's P-521: mtls.go — after checking its sha256 against
// the image manifest) and sends it concurrent Handle calls, or HandleBatch calls
// that carry several tasks: the SDK runs each item of a batch as a Handle call of
// its own (its own context, deadline, cancel through CancelCall, error, wall time
// and log end; its CPU usage is a share of the process's, see cpuShares), up to the type's declared Concurrency at once (GOMAXPROCS when it
// declares none; the batch's first item's type decides), and streams each answer
// back as soon as it is done, the answers done at once in one message. So every
// SDK handler serves batches with no change. The package imports
// only go-plugin, gRPC, protobuf, hclog, the generated code in plugins/proto and
// plugins/internal/contract (the handshake constants and rules it shares with the
// agent), so a handler's build does not pull in the rest of Paddock.
//
//	func main() { sdk.Serve(myHandler{}) }
//
// Inputs of any size arrive as files (Request.Files) and outputs of any size
// leave as files in Request.OutputDir; nothing large crosses gRPC. Request.Input
// reads an input of either kind (inline or file) as a stream, and
// Request.CreateOutput writes an output file while hashing and counting it; the
// SDK reports every file in OutputDir with its size and sha256 to the agent.
//
// Logger (and Request.Logger) write JSON records in go-plugin's log format to the
// stderr the process started with, which the agent reads as log lines, not
// to the os.Stderr that Serve redirects; a record logged through Handle's ctx or
// Request.Logger names its task, and the agent keeps it with that task's logs.
//
// See docs/handlers.md for a walk-through. The SDK is tested through real
// handler subprocesses by the runner's and the example handlers' tests:
//
//	CGO_ENABLED=0 go test -count=1 ./plugins/runner ./plugins/handlers
package sdk
