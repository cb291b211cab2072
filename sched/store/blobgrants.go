package store

import (
	"context"
	"time"
)

// BlobGrants says which tenants may read a blob through the client API. A tenant may
// read a blob it uploaded (GrantBlob, recorded once the upload's bytes were checked
// against the digest: knowing a digest is not enough), and a blob a task of its own
// names as an input or an output.
type BlobGrants interface {
	// GrantBlob records that tenant may read the blob with this digest, which it
	// uploaded with this size. Granting it again changes nothing but the size.
	GrantBlob(ctx context.Context, digest, tenant string, size int64, at time.Time) error
	// BlobGranted reports whether tenant may read the blob with this digest: granted
	// by GrantBlob, or named by one of tenant's tasks.
	BlobGranted(ctx context.Context, digest, tenant string) (bool, error)
	// TenantBlobBytes is the sum of the sizes of the blobs granted to tenant: what
	// its uploads hold in the blob store (tenants.<name>.max_blob_bytes).
	TenantBlobBytes(ctx context.Context, tenant string) (int64, error)
	// DropBlobGrants removes every tenant's grant of the blob with this digest: the
	// blob was deleted, and no longer counts against its uploaders.
	DropBlobGrants(ctx context.Context, digest string) error
}
