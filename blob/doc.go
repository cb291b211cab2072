// Package blob owns Paddock's content-addressed blob store: the Digest type
// ("sha256:" + 64 lowercase hex digits), the Store interface every backend implements,
// its error classes, streaming hash helpers, and FS, the local filesystem store (the
// server's default, <data_dir>/blobs).
//
// A blob is immutable and any size. Every Store streams: no call holds a whole blob in
// memory, and Put verifies digest and size before the blob becomes visible, so a reader
// never sees a partial or wrong blob.
//
// Backends: FS here, an S3-compatible store in blob/s3store. blob/blobtest holds the
// contract suite each backend passes; blob/blobhttp is the HTTP API on the server's client
// port and its Go client. The design is in docs/dataplane.md.
//
// Tests use only real files in t.TempDir():
//
//	go test ./blob/...
//	go test -run '^$' -bench . ./blob/ ./blob/blobhttp/   # MB/s against a raw io.Copy baseline
package blob
