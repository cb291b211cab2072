package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	handlerpb "github.com/paddockvm/paddock/plugins/proto"
	"github.com/paddockvm/paddock/plugins/sdk"
)

// liar serves the handler protocol without the SDK, so it can report output
// files that are not there as reported.
type liar struct {
	handlerpb.UnimplementedHandlerServer
}

func (liar) Describe(context.Context, *handlerpb.DescribeRequest) (*handlerpb.DescribeResponse, error) {
	return &handlerpb.DescribeResponse{
		SdkVersion: sdk.Version, ProtocolVersion: sdk.ProtocolVersion,
		Types:        []*handlerpb.TaskType{{Name: "files.lie", Version: "1.0.0", Description: "test-only: reports output files falsely"}},
		Capabilities: &handlerpb.Capabilities{WaitCall: true, MaxMessageBytes: sdk.MaxMessageBytes},
	}, nil
}

func (liar) Handle(_ context.Context, req *handlerpb.HandleRequest) (*handlerpb.HandleResponse, error) {
	var p struct {
		Write  map[string]int64                 `json:"write"`
		Report map[string]*handlerpb.OutputFile `json:"report"`
	}
	if err := json.Unmarshal(req.GetPayload(), &p); err != nil {
		return &handlerpb.HandleResponse{Error: &handlerpb.Error{Message: fmt.Sprintf("files.lie: payload: %v", err)}}, nil
	}
	for name, n := range p.Write {
		f, err := os.Create(filepath.Join(req.GetOutputDir(), name))
		if err == nil {
			_, err = io.Copy(f, io.LimitReader(&pattern{}, n))
			f.Close()
		}
		if err != nil {
			return &handlerpb.HandleResponse{Error: &handlerpb.Error{Message: err.Error()}}, nil
		}
	}
	return &handlerpb.HandleResponse{OutputFiles: p.Report}, nil
}

func (liar) WaitCall(context.Context, *handlerpb.WaitCallRequest) (*handlerpb.WaitCallResponse, error) {
	return &handlerpb.WaitCallResponse{}, nil
}

// liarPlugin registers liar in place of the SDK's server.
type liarPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (liarPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	handlerpb.RegisterHandlerServer(s, liar{})
	return nil
}

func (liarPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("liarPlugin is server-only")
}

func serveLiar() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: sdk.Handshake,
		Plugins:         plugin.PluginSet{sdk.PluginName: liarPlugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
