package sdk

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/paddockvm/paddock/plugins/internal/contract"
	handlerpb "github.com/paddockvm/paddock/plugins/proto"
)

// Handshake is the go-plugin handshake shared by the agent and every handler.
// A handler run by hand (without the agent) prints go-plugin's "This binary is a
// plugin" message and exits.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   contract.MagicCookieKey,
	MagicCookieValue: contract.MagicCookieValue,
}

// PluginName is the name the handler is registered under in the plugin set.
const PluginName = "handler"

// MaxMessageBytes is the largest gRPC message either side accepts (a request
// with its inputs, or a response with its outputs).
const MaxMessageBytes = contract.MaxMessageBytes

// Plugin is the go-plugin glue for the handler service. Handlers never use it
// directly (Serve does); the agent's runner uses it with a nil Impl to get a
// handlerpb.HandlerClient.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the handler served; nil on the client side.
	Impl Handler
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer registers the handler service (plugin side).
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("sdk.Plugin: no handler to serve (Impl is nil)")
	}
	srv, err := newServer(p.Impl)
	if err != nil {
		return err
	}
	handlerpb.RegisterHandlerServer(s, srv)
	return nil
}

// GRPCClient returns a handlerpb.HandlerClient (agent side).
func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return handlerpb.NewHandlerClient(c), nil
}
