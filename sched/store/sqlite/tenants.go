package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/paddockvm/paddock/sched/store"
)

const tokenCols = `id, tenant, admin, hash, created_at, revoked_at`

func scanToken(sc scanner) (store.Token, error) {
	var tk store.Token
	var admin int
	var created, revoked int64
	if err := sc.Scan(&tk.ID, &tk.Tenant, &admin, &tk.Hash, &created, &revoked); err != nil {
		return tk, err
	}
	tk.Admin, tk.CreatedAt, tk.RevokedAt = admin != 0, fromMS(created), fromMS(revoked)
	return tk, nil
}

// CreateToken implements store.TenantStore.
func (s *Store) CreateToken(ctx context.Context, tok store.Token) error {
	if tok.ID == "" || tok.Hash == "" || tok.Tenant == "" {
		return fmt.Errorf("storing token: id, hash and tenant are required: %w", store.ErrInvalid)
	}
	admin := 0
	if tok.Admin {
		admin = 1
	}
	err := s.write(ctx, func(tx *wtx) error {
		var n int
		if err := tx.queryRow(`SELECT COUNT(*) FROM tokens WHERE id = ? OR hash = ?`, tok.ID, tok.Hash).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("token %s exists: %w", tok.ID, store.ErrConflict)
		}
		_, err := tx.exec(`INSERT INTO tokens (`+tokenCols+`) VALUES (?,?,?,?,?,?)`, tok.ID, tok.Tenant, admin, tok.Hash, ms(tok.CreatedAt), ms(tok.RevokedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("storing token %s: %w", tok.ID, err)
	}
	return nil
}

// TokenByHash implements store.TenantStore.
func (s *Store) TokenByHash(ctx context.Context, hash string) (store.Token, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT `+tokenCols+` FROM tokens WHERE hash = ?`)
	if err != nil {
		return store.Token{}, err
	}
	tk, err := scanToken(st.QueryRowContext(ctx, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return tk, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	if err != nil {
		return tk, fmt.Errorf("reading token: %w", err)
	}
	return tk, nil
}

// Tokens implements store.TenantStore.
func (s *Store) Tokens(ctx context.Context) ([]store.Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens ORDER BY created_at, id`)
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
	var tk store.Token
	err := s.write(ctx, func(tx *wtx) error {
		var err error
		tk, err = scanToken(tx.queryRow(`UPDATE tokens SET revoked_at = CASE WHEN revoked_at = 0 THEN ? ELSE revoked_at END
 WHERE id = ? RETURNING `+tokenCols, ms(at), id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %s: %w", id, store.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return tk, fmt.Errorf("revoking token %s: %w", id, err)
	}
	return tk, nil
}

// CountTenant implements store.TenantStore.
func (s *Store) CountTenant(ctx context.Context, tenant string, st store.State) (int64, error) {
	if !st.Valid() {
		return 0, fmt.Errorf("counting the tasks of tenant %s: state %q: %w", tenant, st, store.ErrInvalid)
	}
	// The state is a literal (see Ready): one statement per state. Queued tasks are
	// counted from the partial index tasks_tenant_ready; other states (only tests ask)
	// read the table.
	q, err := s.prepared(&s.rstmts, s.r, countTenantSQL(st))
	if err != nil {
		return 0, err
	}
	var n int64
	if err := q.QueryRowContext(ctx, tenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the %s tasks of tenant %s: %w", st, tenant, err)
	}
	return n, nil
}

func countTenantSQL(st store.State) string {
	return `SELECT COUNT(*) FROM tasks WHERE tenant = ? AND state = '` + string(st) + `'`
}

const readyTenantSQL = `SELECT ` + listCols + ` FROM tasks WHERE tenant = ? AND state = 'queued' AND type = ? AND not_before <= ?
 ORDER BY priority DESC, seq LIMIT ?`

// ReadyTenant implements store.TenantStore.
func (s *Store) ReadyTenant(ctx context.Context, typ, tenant string, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryLimit(ctx, readyTenantSQL, limit, tenant, typ, ms(now))
	if err != nil {
		return nil, fmt.Errorf("finding ready tasks of type %s of tenant %s: %w", typ, tenant, err)
	}
	return ts, nil
}

// Usage implements store.TenantStore.
func (s *Store) Usage(ctx context.Context, tenant string, since time.Time) ([]store.TenantUsage, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT t.tenant, COUNT(*), SUM(a.wall_ms), SUM(a.cpu_ms), SUM(CAST(a.memory_bytes AS REAL) * a.wall_ms),
 SUM(a.bytes_in), SUM(a.bytes_out) FROM attempts a JOIN tasks t ON t.id = a.task_id
 WHERE a.finished_at >= ? AND a.finished_at > 0 AND (? = '' OR t.tenant = ?) GROUP BY t.tenant ORDER BY t.tenant`, ms(since), tenant, tenant)
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
