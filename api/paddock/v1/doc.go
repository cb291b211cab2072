// Package paddockv1 is the generated Go code of api/paddock/v1/paddock.proto, the client
// API. Regenerate it with `make proto`, which also writes openapi.yaml beside it: the
// OpenAPI 3 description of the JSON routes, made by protoc-gen-openapi (gnostic) from
// the google.api.http options in paddock.proto (TestOpenAPIListsEveryRoute checks that
// it is valid and lists every unary RPC).
package paddockv1
