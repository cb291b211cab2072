// Package blobhttp is the blob store's HTTP API on the server's client port
// (docs/dataplane.md, "Identity and the HTTP API") and its Go client.
//
// NewHandler serves, under /v1/blobs (mount it at both Prefix and Prefix+"/"):
//
//	PUT    /v1/blobs/sha256:<hex>   body = the blob; 201 stored, 200 already there, 400 mismatch (nothing stored)
//	GET    /v1/blobs/sha256:<hex>   the blob; Range: bytes=N- (or N-M, -N) gives 206
//	HEAD   /v1/blobs/sha256:<hex>   Content-Length and Last-Modified, no body
//	DELETE /v1/blobs/sha256:<hex>   204
//	GET    /v1/blobs?after=<digest>&limit=N   {"blobs":[{"digest","size","mod_time"}],"next":"<digest or empty>"}
//
// Options.Authorize runs before any byte of a body is read (a refused upload is never
// read, and a client that sent "Expect: 100-continue" never sends it). Errors are JSON
// {"error": "<what went wrong and the fix>", "code": "<class>"}; Client maps them back to
// blob's error classes.
//
// Tests run a real HTTP server (net/http/httptest on loopback) over a blob.FS in a temp
// dir: go test ./blob/blobhttp/ ; benchmarks: go test -run '^$' -bench . ./blob/blobhttp/
package blobhttp
