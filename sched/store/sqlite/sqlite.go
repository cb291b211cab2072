// Package sqlite is the embedded SQLite implementation of store.Store (pure Go:
// modernc.org/sqlite, so the server builds with CGO_ENABLED=0). One database file in
// WAL mode; the schema is versioned with goose migrations embedded in the binary.
//
// Durability: by default synchronous=NORMAL, which survives the server process being
// killed at any point (kill -9) but may lose the last transactions on a power loss or
// kernel crash; Options.Synchronous "FULL" makes every commit survive those too, at the
// cost of an fsync per commit.
//
//	CGO_ENABLED=0 go test -count=1 ./sched/store/sqlite
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/paddockvm/paddock/sched/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune the database.
type Options struct {
	// Synchronous is SQLite's synchronous pragma: "NORMAL" (default) or "FULL".
	Synchronous string
	// BusyTimeout is how long a connection waits for a lock. Default 10s.
	BusyTimeout time.Duration
}

// Store is a store.Store in one SQLite file.
type Store struct {
	path string
	w    *sql.DB // the single writer connection
	r    *sql.DB // readers
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates it to the latest
// schema.
func Open(ctx context.Context, path string, o Options) (*Store, error) {
	if o.Synchronous == "" {
		o.Synchronous = "NORMAL"
	}
	switch strings.ToUpper(o.Synchronous) {
	case "NORMAL", "FULL":
	default:
		return nil, fmt.Errorf("sqlite store: Synchronous %q: use NORMAL or FULL", o.Synchronous)
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = 10 * time.Second
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "synchronous("+strings.ToUpper(o.Synchronous)+")")
	q.Add("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, w, sub)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("preparing migrations of %s: %w", path, err)
	}
	if _, err := p.Up(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("migrating sqlite database %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	return &Store{path: path, w: w, r: r}, nil
}

// Describe implements store.Store.
func (s *Store) Describe() string { return "sqlite:" + s.path }

// Close implements store.Store.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

const taskCols = `seq, id, type, payload, inputs, priority, class, requirements, timeout_ms, max_attempts,
 idempotency_key, tenant, state, attempt, lease_id, agent_id, lease_expires_at, not_before, cancel_requested,
 output, outputs, output_sha256, error, created_at, updated_at, leased_at, started_at, finished_at`

// listCols omits the blobs.
const listCols = `seq, id, type, NULL, NULL, priority, class, requirements, timeout_ms, max_attempts,
 idempotency_key, tenant, state, attempt, lease_id, agent_id, lease_expires_at, not_before, cancel_requested,
 NULL, NULL, output_sha256, error, created_at, updated_at, leased_at, started_at, finished_at`

type scanner interface{ Scan(dest ...any) error }

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v)
}

func encMap(m map[string][]byte) ([]byte, error) {
	if len(m) == 0 {
		return nil, nil
	}
	return json.Marshal(m)
}

func scanTask(sc scanner) (store.Task, error) {
	var t store.Task
	var inputs, outputs []byte
	var req string
	var timeoutMS, leaseExp, notBefore, created, updated, leased, started, finished int64
	var cancelReq int
	var state, class string
	var leaseID int64
	err := sc.Scan(&t.Seq, &t.ID, &t.Type, &t.Payload, &inputs, &t.Priority, &class, &req, &timeoutMS, &t.MaxAttempts,
		&t.IdempotencyKey, &t.Tenant, &state, &t.Attempt, &leaseID, &t.AgentID, &leaseExp, &notBefore, &cancelReq,
		&t.Output, &outputs, &t.OutputSHA256, &t.Error, &created, &updated, &leased, &started, &finished)
	if err != nil {
		return t, err
	}
	t.State, t.Class, t.LeaseID = store.State(state), store.Class(class), uint64(leaseID)
	t.Timeout = time.Duration(timeoutMS) * time.Millisecond
	t.LeaseExpiresAt, t.NotBefore = fromMS(leaseExp), fromMS(notBefore)
	t.CreatedAt, t.UpdatedAt, t.LeasedAt, t.StartedAt, t.FinishedAt = fromMS(created), fromMS(updated), fromMS(leased), fromMS(started), fromMS(finished)
	t.CancelRequested = cancelReq != 0
	if len(inputs) > 0 {
		if err := json.Unmarshal(inputs, &t.Inputs); err != nil {
			return t, fmt.Errorf("decoding inputs of task %s: %w", t.ID, err)
		}
	}
	if len(outputs) > 0 {
		if err := json.Unmarshal(outputs, &t.Outputs); err != nil {
			return t, fmt.Errorf("decoding outputs of task %s: %w", t.ID, err)
		}
	}
	if req != "" && req != "{}" {
		if err := json.Unmarshal([]byte(req), &t.Requirements); err != nil {
			return t, fmt.Errorf("decoding requirements of task %s: %w", t.ID, err)
		}
	}
	return t, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func getTask(ctx context.Context, q querier, id string) (store.Task, error) {
	t, err := scanTask(q.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("task %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("reading task %s: %w", id, err)
	}
	return t, nil
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, t store.Task) (store.Task, bool, error) {
	if t.ID == "" || t.Type == "" || t.Tenant == "" || t.MaxAttempts < 1 {
		return t, false, fmt.Errorf("creating task: id, type, tenant and max attempts are required: %w", store.ErrInvalid)
	}
	inputs, err := encMap(t.Inputs)
	if err != nil {
		return t, false, fmt.Errorf("encoding inputs of task %s: %w", t.ID, err)
	}
	req, err := json.Marshal(t.Requirements)
	if err != nil {
		return t, false, fmt.Errorf("encoding requirements of task %s: %w", t.ID, err)
	}
	now := ms(t.CreatedAt)
	if now == 0 {
		now = time.Now().UnixMilli()
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return t, false, fmt.Errorf("creating task %s: %w", t.ID, err)
	}
	defer tx.Rollback()
	if t.IdempotencyKey != "" {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM tasks WHERE tenant = ? AND idempotency_key = ?`, t.Tenant, t.IdempotencyKey).Scan(&id)
		if err == nil {
			old, err := getTask(ctx, tx, id)
			return old, false, err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return t, false, fmt.Errorf("looking up idempotency key %q: %w", t.IdempotencyKey, err)
		}
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO tasks (id, type, payload, inputs, priority, class, requirements, timeout_ms,
 max_attempts, idempotency_key, tenant, state, not_before, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		t.ID, t.Type, t.Payload, inputs, t.Priority, string(t.Class), string(req), t.Timeout.Milliseconds(),
		t.MaxAttempts, t.IdempotencyKey, t.Tenant, string(store.Queued), ms(t.NotBefore), now, now)
	if err != nil {
		return t, false, fmt.Errorf("inserting task %s: %w", t.ID, err)
	}
	stored, err := getTask(ctx, tx, t.ID)
	if err != nil {
		return t, false, err
	}
	if err := tx.Commit(); err != nil {
		return t, false, fmt.Errorf("committing task %s: %w", t.ID, err)
	}
	return stored, true, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (store.Task, error) {
	return getTask(ctx, s.r, id)
}

// Attempts implements store.Store.
func (s *Store) Attempts(ctx context.Context, id string) ([]store.Attempt, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT task_id, number, lease_id, agent_id, state, error, retryable, wall_ms, cpu_ms,
 sha256, leased_at, finished_at FROM attempts WHERE task_id = ? ORDER BY number`, id)
	if err != nil {
		return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
	}
	defer rows.Close()
	var out []store.Attempt
	for rows.Next() {
		var a store.Attempt
		var leaseID, wall, cpu, leased, finished int64
		var state string
		var retryable int
		if err := rows.Scan(&a.TaskID, &a.Number, &leaseID, &a.AgentID, &state, &a.Error, &retryable, &wall, &cpu,
			&a.SHA256, &leased, &finished); err != nil {
			return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
		}
		a.LeaseID, a.State, a.Retryable = uint64(leaseID), store.State(state), retryable != 0
		a.Usage = store.Usage{Wall: time.Duration(wall) * time.Millisecond, CPU: time.Duration(cpu) * time.Millisecond}
		a.LeasedAt, a.FinishedAt = fromMS(leased), fromMS(finished)
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *Store) queryTasks(ctx context.Context, q string, args ...any) ([]store.Task, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, f store.Filter) ([]store.Task, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var where []string
	var args []any
	if f.State != "" {
		where, args = append(where, "state = ?"), append(args, string(f.State))
	}
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, f.Type)
	}
	if f.Tenant != "" {
		where, args = append(where, "tenant = ?"), append(args, f.Tenant)
	}
	if f.Class != "" {
		where, args = append(where, "class = ?"), append(args, string(f.Class))
	}
	if f.PageToken != "" {
		seq, err := strconv.ParseInt(f.PageToken, 10, 64)
		if err != nil || seq <= 0 {
			return nil, "", fmt.Errorf("page token %q is not one this server returned: %w", f.PageToken, store.ErrInvalid)
		}
		where, args = append(where, "seq < ?"), append(args, seq)
	}
	q := `SELECT ` + listCols + ` FROM tasks`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY seq DESC LIMIT ?"
	args = append(args, limit+1)
	ts, err := s.queryTasks(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("listing tasks: %w", err)
	}
	next := ""
	if len(ts) > limit {
		ts = ts[:limit]
		next = strconv.FormatInt(ts[limit-1].Seq, 10)
	}
	return ts, next, nil
}

// Ready implements store.Store.
func (s *Store) Ready(ctx context.Context, typ string, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, `SELECT `+listCols+` FROM tasks WHERE state = ? AND type = ? AND not_before <= ?
 ORDER BY priority DESC, seq LIMIT ?`, string(store.Queued), typ, ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("finding ready tasks of type %s: %w", typ, err)
	}
	return ts, nil
}

// Lease implements store.Store.
func (s *Store) Lease(ctx context.Context, now time.Time, grants []store.Grant) ([]store.Task, error) {
	if len(grants) == 0 {
		return nil, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("leasing tasks: %w", err)
	}
	defer tx.Rollback()
	n := ms(now)
	var out []store.Task
	for _, g := range grants {
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET state = ?, lease_id = lease_id + 1, attempt = attempt + 1,
 agent_id = ?, lease_expires_at = ?, leased_at = ?, started_at = 0, updated_at = ? WHERE id = ? AND state = ?`,
			string(store.Leased), g.AgentID, ms(g.ExpiresAt), n, n, g.TaskID, string(store.Queued))
		if err != nil {
			return nil, fmt.Errorf("leasing task %s: %w", g.TaskID, err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO attempts (task_id, number, lease_id, agent_id, state, leased_at)
 SELECT id, attempt, lease_id, agent_id, ?, ? FROM tasks WHERE id = ?`, string(store.Running), n, g.TaskID); err != nil {
			return nil, fmt.Errorf("recording attempt of task %s: %w", g.TaskID, err)
		}
		t, err := getTask(ctx, tx, g.TaskID)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("committing leases: %w", err)
	}
	return out, nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, u store.Update) (store.Task, error) {
	if len(u.From) == 0 || !u.To.Valid() {
		return store.Task{}, fmt.Errorf("updating task %s: From and a valid To are required: %w", u.TaskID, store.ErrInvalid)
	}
	for _, f := range u.From {
		if f != u.To && !store.Legal(f, u.To) {
			return store.Task{}, fmt.Errorf("updating task %s from %s to %s: %w", u.TaskID, f, u.To, store.ErrInvalid)
		}
	}
	n := ms(u.Now)
	if n == 0 {
		n = time.Now().UnixMilli()
	}
	sets := []string{"state = ?", "updated_at = ?"}
	args := []any{string(u.To), n}
	if u.To.Terminal() {
		sets, args = append(sets, "finished_at = ?"), append(args, n)
	}
	if u.Output != nil {
		sets, args = append(sets, "output = ?"), append(args, *u.Output)
	}
	if u.Outputs != nil {
		b, err := encMap(u.Outputs)
		if err != nil {
			return store.Task{}, fmt.Errorf("encoding outputs of task %s: %w", u.TaskID, err)
		}
		sets, args = append(sets, "outputs = ?"), append(args, b)
	}
	if u.OutputSHA256 != "" {
		sets, args = append(sets, "output_sha256 = ?"), append(args, u.OutputSHA256)
	}
	if u.Error != nil {
		sets, args = append(sets, "error = ?"), append(args, *u.Error)
	}
	if !u.NotBefore.IsZero() {
		sets, args = append(sets, "not_before = ?"), append(args, ms(u.NotBefore))
	}
	if u.CancelRequested {
		sets = append(sets, "cancel_requested = 1")
	}
	if u.Started {
		sets, args = append(sets, "started_at = ?"), append(args, n)
	}
	if !u.LeaseExpiresAt.IsZero() {
		sets, args = append(sets, "lease_expires_at = ?"), append(args, ms(u.LeaseExpiresAt))
	}
	q := `UPDATE tasks SET ` + strings.Join(sets, ", ") + ` WHERE id = ? AND state IN (?` + strings.Repeat(",?", len(u.From)-1) + `)`
	args = append(args, u.TaskID)
	for _, f := range u.From {
		args = append(args, string(f))
	}
	if u.LeaseID != 0 {
		q, args = q+" AND lease_id = ?", append(args, int64(u.LeaseID))
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return store.Task{}, fmt.Errorf("updating task %s: %w", u.TaskID, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return store.Task{}, fmt.Errorf("updating task %s: %w", u.TaskID, err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		t, err := getTask(ctx, tx, u.TaskID)
		if err != nil {
			return t, err
		}
		return t, fmt.Errorf("task %s is %s under lease %d, not %v under lease %d: %w", u.TaskID, t.State, t.LeaseID, u.From, u.LeaseID, store.ErrConflict)
	}
	if u.EndAttempt {
		errText := ""
		if u.Error != nil {
			errText = *u.Error
		}
		retryable := 0
		if u.Retryable {
			retryable = 1
		}
		if _, err := tx.ExecContext(ctx, `UPDATE attempts SET state = ?, error = ?, retryable = ?, wall_ms = ?, cpu_ms = ?,
 sha256 = ?, finished_at = ? WHERE task_id = ? AND number = (SELECT attempt FROM tasks WHERE id = ?)`,
			string(u.To), errText, retryable, u.Usage.Wall.Milliseconds(), u.Usage.CPU.Milliseconds(), u.OutputSHA256, n,
			u.TaskID, u.TaskID); err != nil {
			return store.Task{}, fmt.Errorf("recording the end of the attempt of task %s: %w", u.TaskID, err)
		}
	}
	t, err := getTask(ctx, tx, u.TaskID)
	if err != nil {
		return t, err
	}
	if err := tx.Commit(); err != nil {
		return t, fmt.Errorf("committing update of task %s: %w", u.TaskID, err)
	}
	return t, nil
}

// Renew implements store.Store.
func (s *Store) Renew(ctx context.Context, agentID string, leases []store.LeaseRef, expires time.Time) (int, error) {
	if len(leases) == 0 {
		return 0, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("renewing leases of agent %s: %w", agentID, err)
	}
	defer tx.Rollback()
	total := 0
	for _, l := range leases {
		res, err := tx.ExecContext(ctx, `UPDATE tasks SET lease_expires_at = ? WHERE id = ? AND lease_id = ? AND agent_id = ?
 AND state IN (?, ?)`, ms(expires), l.TaskID, int64(l.LeaseID), agentID, string(store.Leased), string(store.Running))
		if err != nil {
			return 0, fmt.Errorf("renewing lease %d of task %s: %w", l.LeaseID, l.TaskID, err)
		}
		k, _ := res.RowsAffected()
		total += int(k)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("committing lease renewals: %w", err)
	}
	return total, nil
}

// Expired implements store.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, `SELECT `+listCols+` FROM tasks WHERE state IN (?, ?) AND lease_expires_at < ?
 ORDER BY lease_expires_at LIMIT ?`, string(store.Leased), string(store.Running), ms(now), limit)
	if err != nil {
		return nil, fmt.Errorf("finding expired leases: %w", err)
	}
	return ts, nil
}

// Live implements store.Store.
func (s *Store) Live(ctx context.Context) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, `SELECT `+listCols+` FROM tasks WHERE state IN (?, ?) ORDER BY seq`,
		string(store.Leased), string(store.Running))
	if err != nil {
		return nil, fmt.Errorf("listing live tasks: %w", err)
	}
	return ts, nil
}

// Counts implements store.Store.
func (s *Store) Counts(ctx context.Context) ([]store.Count, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT type, state, COUNT(*) FROM tasks GROUP BY type, state ORDER BY type, state`)
	if err != nil {
		return nil, fmt.Errorf("counting tasks: %w", err)
	}
	defer rows.Close()
	var out []store.Count
	for rows.Next() {
		var c store.Count
		var st string
		if err := rows.Scan(&c.Type, &st, &c.N); err != nil {
			return nil, fmt.Errorf("counting tasks: %w", err)
		}
		c.State = store.State(st)
		out = append(out, c)
	}
	return out, rows.Err()
}
