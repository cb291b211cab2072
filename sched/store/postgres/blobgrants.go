package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/sched/store/internal/rowcodec"
)

// GrantBlob implements store.BlobGrants.
func (s *Store) GrantBlob(ctx context.Context, digest, tenant string, size int64, at time.Time) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO blob_grants (digest, tenant, granted_at, size) VALUES ($1, $2, $3, $4)
 ON CONFLICT (digest, tenant) DO UPDATE SET size = excluded.size`,
		digest, tenant, rowcodec.MS(at), size); err != nil {
		return fmt.Errorf("granting blob %s to tenant %s: %w", digest, tenant, err)
	}
	return nil
}

// BlobGranted implements store.BlobGrants.
func (s *Store) BlobGranted(ctx context.Context, digest, tenant string) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blob_grants WHERE digest = $1 AND tenant = $2)
 OR EXISTS (SELECT 1 FROM task_blobs b JOIN tasks t ON t.id = b.task_id WHERE b.digest = $1 AND t.tenant = $2)`, digest, tenant).Scan(&ok); err != nil {
		return false, fmt.Errorf("checking whether tenant %s may read blob %s: %w", tenant, digest, err)
	}
	return ok, nil
}

// TenantBlobBytes implements store.BlobGrants.
func (s *Store) TenantBlobBytes(ctx context.Context, tenant string) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT COALESCE(SUM(size), 0)::BIGINT FROM blob_grants WHERE tenant = $1`, tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("summing the blobs of tenant %s: %w", tenant, err)
	}
	return n, nil
}

// DropBlobGrants implements store.BlobGrants.
func (s *Store) DropBlobGrants(ctx context.Context, digest string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM blob_grants WHERE digest = $1`, digest); err != nil {
		return fmt.Errorf("dropping the grants of blob %s: %w", digest, err)
	}
	return nil
}
