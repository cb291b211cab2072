// Package s3store is a blob.Store on an S3-compatible object store (AWS S3, MinIO, Ceph
// radosgw, ...), using the AWS SDK for Go v2.
//
// Layout: blob d is the object <Prefix>sha256/<hex>. Put streams the data to a temporary
// object <Prefix>tmp/<hex>.<random> with the SDK's multipart uploader (memory bounded by
// PartSize × Concurrency, 16 MiB × 3 here, whatever the blob's size) while hashing it,
// and only when digest and size match makes it visible under its final key with a
// server-side copy (nothing moves through this process). The temporary object is deleted
// either way. A copy of more than 5 GiB (CopyObject's limit) is done as a multipart copy
// (UploadPartCopy in 1 GiB ranges); after either copy the object's size is checked, and
// a wrong one removed. gofakes3, the test server, lacks UploadPartCopy: the tests add it
// with a small shim in front of gofakes3 and take that path with lowered limits.
//
// Objects left by a crash (temporary objects, incomplete multipart uploads) are not
// visible as blobs. New deletes temporary objects older than StaleAfter; a bucket
// lifecycle rule "AbortIncompleteMultipartUpload after 1 day" cleans the rest.
//
// Network errors and 5xx answers wrap blob.ErrUnavailable.
//
// Tests run the blobtest contract suite against github.com/johannesboyne/gofakes3 served
// by net/http/httptest on loopback (real HTTP, the real S3 protocol, SigV4 signing):
//
//	go test ./blob/s3store/
package s3store
