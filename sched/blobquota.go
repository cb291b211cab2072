package sched

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/paddockvm/paddock/blob"
	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/tenant"
)

// blobQuota holds each tenant's uploads to its tenants.<name>.max_blob_bytes: the
// sizes of the blobs granted to it (store.BlobGrants.TenantBlobBytes) plus the uploads
// in flight on this replica. Replicas do not see each other's uploads in flight, so
// on several replicas a tenant may pass its limit by at most the uploads it has open
// at once on the others.
type blobQuota struct {
	grants  store.BlobGrants
	tenants tenant.Config

	mu      sync.Mutex
	pending map[string]int64 // bytes being uploaded, by tenant
}

func newBlobQuota(grants store.BlobGrants, tenants tenant.Config) *blobQuota {
	return &blobQuota{grants: grants, tenants: tenants, pending: map[string]int64{}}
}

// take holds size bytes (-1: unknown) of tenant tn's limit for one upload. It returns
// the most the upload may bring (-1: no limit) and the function that gives the hold
// back, or an error wrapping blob.ErrTooLarge that names the key when the upload would
// pass the limit.
func (q *blobQuota) take(ctx context.Context, tn string, size int64) (int64, func(), error) {
	limit := q.tenants.Of(tn).MaxBlobBytes
	if limit <= 0 {
		return -1, func() {}, nil
	}
	used, err := q.grants.TenantBlobBytes(ctx, tn)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", blob.ErrUnavailable, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	held := used + q.pending[tn]
	room := limit - held
	if size >= 0 && size > room || size < 0 && room <= 0 {
		return 0, nil, q.over(tn, held, size, limit)
	}
	hold := size
	if size < 0 {
		hold = room // an upload of unknown length may fill what is left
	}
	q.pending[tn] += hold
	var once sync.Once
	return hold, func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			if q.pending[tn] -= hold; q.pending[tn] <= 0 {
				delete(q.pending, tn)
			}
		})
	}, nil
}

// over is the error of an upload past tenant tn's limit.
func (q *blobQuota) over(tn string, held, size, limit int64) error {
	what := fmt.Sprintf("this upload of %d bytes", size)
	if size < 0 {
		what = "this upload (of unknown length)"
	}
	return fmt.Errorf("%w: tenant %s holds %d bytes of blobs and %s would pass its limit of %d (tenants.%s.max_blob_bytes): blobs no task uses are deleted after server.blob_retention, or ask an admin to raise the limit",
		blob.ErrTooLarge, tn, held, what, limit, tn)
}

// overLeft is the error of an upload of unknown length that brought more than the left
// bytes its tenant's limit had room for when it began.
func (q *blobQuota) overLeft(tn string, left int64) error {
	return fmt.Errorf("%w: tenant %s: this upload brought more than the %d bytes left of its limit of %d (tenants.%s.max_blob_bytes): blobs no task uses are deleted after server.blob_retention, or ask an admin to raise the limit",
		blob.ErrTooLarge, tn, left, q.tenants.Of(tn).MaxBlobBytes, tn)
}

// quotaReader fails with overflow once more than left bytes were read.
type quotaReader struct {
	r        io.Reader
	left     int64
	overflow func() error
}

func (l *quotaReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, l.overflow()
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if l.left -= int64(n); l.left < 0 {
		return n, l.overflow()
	}
	return n, err
}
