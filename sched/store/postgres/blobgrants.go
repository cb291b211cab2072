package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/sched/store/internal/rowcodec"
)

// GrantBlob implements store.BlobGrants.
func (s *Store) GrantBlob(ctx context.Context, digest, tenant string, at time.Time) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO blob_grants (digest, tenant, granted_at) VALUES ($1, $2, $3) ON CONFLICT (digest, tenant) DO NOTHING`,
		digest, tenant, rowcodec.MS(at)); err != nil {
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
