package sched

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/paddockvm/paddock/api/paddock/v1/paddockv1connect"
	"github.com/paddockvm/paddock/sched/store"
)

// The standard gRPC services on the client port, for load balancers, probes and
// tools such as grpcurl and grpcui (connectrpc.com/grpchealth and grpcreflect):
//
//   - grpc.health.v1.Health Check answers SERVING only while the store answers a read
//     within HealthStoreTimeout, NOT_SERVING otherwise, for the whole server ("") and
//     for each client service; it needs no token, as /healthz. Watch answers
//     UNIMPLEMENTED (allowed by the protocol; probes call Check).
//   - grpc.reflection.v1 and v1alpha ServerReflection describe the client services
//     (paddock.v1.TaskService, paddock.v1.ClusterService); they need the client token
//     like the API itself.

// HealthStoreTimeout bounds the store read behind one health check.
const HealthStoreTimeout = 5 * time.Second

// healthProbeID is the task id the health check reads: no task has it, so the store
// answers "not found" when it is up.
const healthProbeID = "paddock-health-probe"

// clientServices are the services the client port describes and reports health for.
var clientServices = []string{paddockv1connect.TaskServiceName, paddockv1connect.ClusterServiceName}

// withGRPCServices serves grpc.health.v1 and gRPC reflection next to api.
func (s *Server) withGRPCServices(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(grpchealth.NewHandler(storeChecker{s}))
	reflector := grpcreflect.NewStaticReflector(clientServices...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle("/", api)
	return mux
}

// isHealthPath reports whether path is a grpc.health.v1 call (public, as /healthz).
func isHealthPath(path string) bool {
	return strings.HasPrefix(path, "/"+grpchealth.HealthV1ServiceName+"/")
}

// storeChecker is the grpchealth.Checker of the client port.
type storeChecker struct{ s *Server }

var _ grpchealth.Checker = storeChecker{}

// Check answers SERVING when the store answers a read, NOT_SERVING when it does not,
// and NotFound for a service the port does not serve.
func (c storeChecker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	known := req.Service == ""
	for _, name := range clientServices {
		known = known || req.Service == name
	}
	if !known {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("service: %q is not served here; ask for \"\" or one of %s", req.Service, strings.Join(clientServices, ", ")))
	}
	if err := c.s.storeAnswers(ctx); err != nil {
		c.s.log.Warn("health check: the store does not answer", "err", err)
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// storeAnswers reads one task id nobody has: nil when the store answered (not found).
func (s *Server) storeAnswers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, HealthStoreTimeout)
	defer cancel()
	_, err := s.st.Get(ctx, healthProbeID)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return fmt.Errorf("reading the store (%s): %w", s.st.Describe(), err)
}
