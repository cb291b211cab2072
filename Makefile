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

.PHONY: all setup build test demo lint proto clean

all: build

setup:
	bash scripts/setup.sh

build:
	mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/paddock ./cmd/paddock
	CGO_ENABLED=0 $(GO) build -ldflags '-s -w $(LDFLAGS)' -o $(BIN)/paddock-agent ./cmd/paddock-agent
	mkdir -p $(BIN)/handlers
	for h in $(HANDLERS); do CGO_ENABLED=0 $(GO) build -ldflags '-s -w' -o $(BIN)/handlers/$$h ./plugins/handlers/$$h || exit 1; done
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
proto:
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)
	$(GO) install $(PROTOC_GEN_CONNECT)
	# gRPC (grpc-go) for the handler protocol and the agent protocol.
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		$$(find plugins api/agent api/host -name '*.proto' | sort)
	# connect-go (gRPC, gRPC-Web and JSON over HTTP) for the client API.
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--connect-go_out=. --connect-go_opt=paths=source_relative \
		$$(find api/paddock -name '*.proto' | sort)

clean:
	rm -rf $(BIN)
