# Paddock. `make demo` and `make test` set up a fresh Debian/Ubuntu machine themselves.
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/paddockvm/paddock/internal/buildinfo.Version=$(VERSION)
# Packages that must build without cgo (libvirt stays inside hypervisor and cmd/paddock).
NOCGO_PKGS := ./sched/... ./agent/... ./plugins/...
TEST_TIMEOUT ?= 80m
# Example handlers built into bin/handlers/ (static: they run inside guests).
HANDLERS := checksum logscan score compress testhandler
# Flags of the static binaries that go into guest images (agent and handlers). The
# grpcnotrace tag drops grpc's golang.org/x/net/trace, whose html/template use keeps
# every exported method of every linked type: 2.4 MB of the agent (14.0 -> 11.6 MB;
# 10.0 MB since plugins/runner has its own gRPC-only go-plugin client),
# pages the initramfs holds in each guest's memory. docs/operations.md "What an idle
# guest costs".
GUEST_BUILD := CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace

.PHONY: all setup build test demo lint proto clean

all: build

setup:
	bash scripts/setup.sh

build:
	mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/paddock ./cmd/paddock
	$(GUEST_BUILD) -ldflags '-s -w $(LDFLAGS)' -o $(BIN)/paddock-agent ./cmd/paddock-agent
	mkdir -p $(BIN)/handlers
	for h in $(HANDLERS); do $(GUEST_BUILD) -ldflags '-s -w' -o $(BIN)/handlers/$$h ./plugins/handlers/$$h || exit 1; done
	CGO_ENABLED=0 $(GO) build $(NOCGO_PKGS)

# Fuzz targets run briefly in `make test` (FUZZTIME each); `FUZZTIME=10m bash scripts/fuzz.sh` is the long run.
FUZZTIME ?= 5s

test: setup
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build $(NOCGO_PKGS)
	$(GO) test -timeout $(TEST_TIMEOUT) ./...
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# The demo scenario (scripts/demo.sh): `paddock dev` in the background (server, host daemon and two
# warm micro-VM guests), the scenario driven through the CLI, results checked, then a clean stop.
demo: setup build
	BIN=$(BIN) bash scripts/demo.sh

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Regenerate the committed protobuf code. Needs protoc (apt: protobuf-compiler).
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
PROTOC_GEN_CONNECT := connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
# OpenAPI 3 description of the client API's JSON routes (from its google.api.http options).
GNOSTIC := github.com/google/gnostic@v0.7.1
PROTOC_GEN_OPENAPI := github.com/google/gnostic/cmd/protoc-gen-openapi@v0.7.1
# google/api/annotations.proto, http.proto and google/protobuf/descriptor.proto (which
# Debian's protoc does not ship), as the pinned gnostic module has them.
GNOSTIC_DIR = $$($(GO) env GOMODCACHE)/$(GNOSTIC)
GOOGLEAPIS_INC = -I $(GNOSTIC_DIR)/cmd/protoc-gen-openapi/examples -I $(GNOSTIC_DIR)/third_party
proto:
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)
	$(GO) install $(PROTOC_GEN_CONNECT)
	$(GO) install $(PROTOC_GEN_OPENAPI)
	# gRPC (grpc-go) for the handler protocol and the agent protocol.
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		$$(find plugins api/agent api/host -name '*.proto' | sort)
	# connect-go (gRPC, gRPC-Web and JSON over HTTP) for the client API.
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I . $(GOOGLEAPIS_INC) \
		--go_out=. --go_opt=paths=source_relative \
		--connect-go_out=. --connect-go_opt=paths=source_relative \
		$$(find api/paddock -name '*.proto' | sort)
	# OpenAPI (protoc-gen-openapi, gnostic) for the JSON routes: api/paddock/v1/openapi.yaml.
	# (protoc splits plugin options at commas: none in the description.)
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I . $(GOOGLEAPIS_INC) \
		--openapi_out=api/paddock/v1 \
		--openapi_opt=title="Paddock client API" --openapi_opt=version=v1 \
		--openapi_opt=enum_type=string --openapi_opt=default_response=false \
		--openapi_opt=description="JSON over HTTP on the client port of paddock server (docs/api.md). Outside dev mode every call needs the header Authorization: Bearer TOKEN. An error is a JSON object with code and message and an HTTP status." \
		$$(find api/paddock -name '*.proto' | sort)

clean:
	rm -rf $(BIN)
