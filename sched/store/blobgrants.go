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
	// GrantBlob records that tenant may read the blob with this digest.
	GrantBlob(ctx context.Context, digest, tenant string, at time.Time) error
	// BlobGranted reports whether tenant may read the blob with this digest: granted
	// by GrantBlob, or named by one of tenant's tasks.
	BlobGranted(ctx context.Context, digest, tenant string) (bool, error)
}
