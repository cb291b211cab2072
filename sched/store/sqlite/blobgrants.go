package sqlite

import (
	"context"
	"fmt"
	"time"
)

// GrantBlob implements store.BlobGrants.
func (s *Store) GrantBlob(ctx context.Context, digest, tenant string, size int64, at time.Time) error {
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.exec(`INSERT INTO blob_grants (digest, tenant, granted_at, size) VALUES (?, ?, ?, ?)
 ON CONFLICT (digest, tenant) DO UPDATE SET size = excluded.size`, digest, tenant, ms(at), size)
		return err
	})
	if err != nil {
		return fmt.Errorf("granting blob %s to tenant %s: %w", digest, tenant, err)
	}
	return nil
}

// BlobGranted implements store.BlobGrants.
func (s *Store) BlobGranted(ctx context.Context, digest, tenant string) (bool, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT EXISTS (SELECT 1 FROM blob_grants WHERE digest = ? AND tenant = ?)
 OR EXISTS (SELECT 1 FROM task_blobs b JOIN tasks t ON t.id = b.task_id WHERE b.digest = ? AND t.tenant = ?)`)
	if err != nil {
		return false, fmt.Errorf("checking whether tenant %s may read blob %s: %w", tenant, digest, err)
	}
	var ok int
	if err := st.QueryRowContext(ctx, digest, tenant, digest, tenant).Scan(&ok); err != nil {
		return false, fmt.Errorf("checking whether tenant %s may read blob %s: %w", tenant, digest, err)
	}
	return ok != 0, nil
}

// TenantBlobBytes implements store.BlobGrants.
func (s *Store) TenantBlobBytes(ctx context.Context, tenant string) (int64, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT COALESCE(SUM(size), 0) FROM blob_grants WHERE tenant = ?`)
	if err != nil {
		return 0, fmt.Errorf("summing the blobs of tenant %s: %w", tenant, err)
	}
	var n int64
	if err := st.QueryRowContext(ctx, tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("summing the blobs of tenant %s: %w", tenant, err)
	}
	return n, nil
}

// DropBlobGrants implements store.BlobGrants.
func (s *Store) DropBlobGrants(ctx context.Context, digest string) error {
	err := s.write(ctx, func(tx *wtx) error {
		_, err := tx.exec(`DELETE FROM blob_grants WHERE digest = ?`, digest)
		return err
	})
	if err != nil {
		return fmt.Errorf("dropping the grants of blob %s: %w", digest, err)
	}
	return nil
}
