package sdk

import (
	"os"

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
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &Plugin{Impl: h}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.MaxRecvMsgSize(MaxMessageBytes), grpc.MaxSendMsgSize(MaxMessageBytes))
			return grpc.NewServer(opts...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Level: hclog.Info, Output: os.Stderr, JSONFormat: true,
		}),
	})
}
