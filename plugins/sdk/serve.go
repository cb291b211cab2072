package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Serve serves h to the Paddock agent and returns when the agent shuts the
// handler down. It is the only call a handler's main makes. A handler whose
// Describe is invalid (no types, a type without a name or version) exits with a
// message saying what to fix.
func Serve(h Handler) {
	if err := ValidateTypes(h.Describe()); err != nil {
		os.Stderr.WriteString("paddock handler: invalid Describe: " + err.Error() + "\n")
		os.Exit(1)
	}
	if dir := os.Getenv(CPUProfileEnv); dir != "" {
		stop, err := startCPUProfile(dir)
		if err != nil {
			os.Stderr.WriteString("paddock handler: " + CPUProfileEnv + ": " + err.Error() + "\n")
			os.Exit(1)
		}
		defer stop()
	}
	tlsProv, err := tlsProvider()
	if err != nil {
		os.Stderr.WriteString("paddock handler: " + err.Error() + "\n")
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		TLSProvider:     tlsProv, // AutoMTLS on P-256 (mtls.go)
		Plugins:         plugin.PluginSet{PluginName: &Plugin{Impl: h}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes),
				// Calls run on a few long-lived goroutines whose stacks have grown, instead of a
				// new goroutine per call that grows its stack again (decoding a HandleBatch
				// request): a call that finds them all busy still gets a goroutine of its own.
				grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))))
			return grpc.NewServer(opts...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Level: hclog.Info, Output: os.Stderr, JSONFormat: true,
		}),
	})
}

// CPUProfileEnv names the environment variable that, set to a directory, has Serve
// write a CPU profile of the handler process to <dir>/handler-<binary>-<pid>.pprof,
// from its start until the agent shuts it down (a handler killed instead leaves an
// empty file). Handlers inherit the agent's environment, so setting it for the agent
// (or for a test that runs handlers) profiles every handler it starts. Unset: nothing
// is profiled, and nothing but this one lookup is spent.
const CPUProfileEnv = "PADDOCK_HANDLER_CPUPROFILE"

// startCPUProfile starts a CPU profile in dir; stop writes it out.
func startCPUProfile(dir string) (stop func(), err error) {
	path := filepath.Join(dir, fmt.Sprintf("handler-%s-%d.pprof", filepath.Base(os.Args[0]), os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating the profile: %w (set it to an existing, writable directory)", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting the profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
