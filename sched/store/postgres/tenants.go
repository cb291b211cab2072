package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/internal/rowcodec"
)

const tokenCols = `id, tenant, admin, hash, created_at, revoked_at`

func scanToken(row pgx.Row) (store.Token, error) {
	var tk store.Token
	var created, revoked int64
	if err := row.Scan(&tk.ID, &tk.Tenant, &tk.Admin, &tk.Hash, &created, &revoked); err != nil {
		return tk, err
	}
	tk.CreatedAt, tk.RevokedAt = rowcodec.FromMS(created), rowcodec.FromMS(revoked)
	return tk, nil
}

// CreateToken implements store.TenantStore.
func (s *Store) CreateToken(ctx context.Context, tok store.Token) error {
	if tok.ID == "" || tok.Hash == "" || tok.Tenant == "" {
		return fmt.Errorf("storing token: id, hash and tenant are required: %w", store.ErrInvalid)
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING`,
		tok.ID, tok.Tenant, tok.Admin, tok.Hash, rowcodec.MS(tok.CreatedAt), rowcodec.MS(tok.RevokedAt))
	if err != nil {
		return fmt.Errorf("storing token %s: %w", tok.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("storing token %s: it exists: %w", tok.ID, store.ErrConflict)
	}
	return nil
}

// TokenByHash implements store.TenantStore.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	tk, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE hash = $1`, hash))
	if errors.Is(err, pgx.ErrNoRows) {
		return tk, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	if err != nil {
		return tk, fmt.Errorf("reading token: %w", err)
	}
	return tk, nil
}

// Tokens implements store.TenantStore.
func (s *Store) Tokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	defer rows.Close()
	var out []store.Token
	for rows.Next() {
		tk, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("listing tokens: %w", err)
		}
		out = append(out, tk)
	}
	return out, rows.Err()
}

// RevokeToken implements store.TenantStore.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) (store.Token, error) {
	tk, err := scanToken(s.pool.QueryRow(ctx, `UPDATE tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN $1 ELSE revoked_at END
 WHERE id = $2 RETURNING `+tokenCols, rowcodec.MS(at), id))
	if errors.Is(err, pgx.ErrNoRows) {
		return tk, fmt.Errorf("revoking token %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return tk, fmt.Errorf("revoking token %s: %w", id, err)
	}
	return tk, nil
}

// CountTenant implements store.TenantStore.
func (s *Store) CountTenant(ctx context.Context, tenant string, st store.State) (int64, error) {
	var n int64
	q := `SELECT COUNT(*) FROM tasks WHERE tenant = $1 AND state = $2`
	if st == store.Queued { // the state in the text, so that every plan may use the partial index tasks_tenant_ready
		q = `SELECT COUNT(*) FROM tasks WHERE tenant = $1 AND state = 'queued' AND $2 = 'queued'`
	}
	if err := s.pool.QueryRow(ctx, q, tenant, string(st)).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the %s tasks of tenant %s: %w", st, tenant, err)
	}
	return n, nil
}

// ReadyTenant implements store.TenantStore.
func (s *Store) ReadyTenant(ctx context.Context, typ, tenant string, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, `SELECT `+listCols+` FROM tasks WHERE tenant = $1 AND state = 'queued' AND type = $2 AND not_before <= $3
 ORDER BY priority DESC, seq LIMIT $4`, tenant, typ, rowcodec.MS(now), limit)
	if err != nil {
		return nil, fmt.Errorf("finding ready tasks of type %s of tenant %s: %w", typ, tenant, err)
	}
	return ts, nil
}

// Usage implements store.TenantStore.
func (s *Store) Usage(ctx context.Context, tenant string, since time.Time) ([]store.TenantUsage, error) {
	rows, err := s.pool.Query(ctx, `SELECT t.tenant, COUNT(*), SUM(a.wall_ms)::bigint, SUM(a.cpu_ms)::bigint,
 SUM(a.memory_bytes::float8 * a.wall_ms), SUM(a.bytes_in)::bigint, SUM(a.bytes_out)::bigint
 FROM attempts a JOIN tasks t ON t.id = a.task_id
 WHERE a.finished_at >= $1 AND a.finished_at > 0 AND ($2 = '' OR t.tenant = $2) GROUP BY t.tenant ORDER BY t.tenant`, rowcodec.MS(since), tenant)
	if err != nil {
		return nil, fmt.Errorf("summing usage: %w", err)
	}
	defer rows.Close()
	var out []store.TenantUsage
	for rows.Next() {
		var u store.TenantUsage
		var wall, cpu int64
		if err := rows.Scan(&u.Tenant, &u.Attempts, &wall, &cpu, &u.MemoryByteMillis, &u.BytesIn, &u.BytesOut); err != nil {
			return nil, fmt.Errorf("summing usage: %w", err)
		}
		u.Wall, u.CPU = time.Duration(wall)*time.Millisecond, time.Duration(cpu)*time.Millisecond
		out = append(out, u)
	}
	return out, rows.Err()
}
