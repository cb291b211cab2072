package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/paddockvm/paddock/sched/store"
	"github.com/paddockvm/paddock/sched/store/internal/rowcodec"
)

//go:embed migrations/*.sql
var migrations embed.FS

// writers is the number of batches of writes in flight at once (committer). One: the
// writes that arrive while a batch commits make the next batch, and the bigger the
// batches the less each write costs the server (measured with BenchmarkRiverBaseline:
// two writers cost about a fifth more server CPU per task, for no more tasks/s on two
// cores).
const writers = 1

// Options tune the connection to PostgreSQL.
type Options struct {
	// MaxConns bounds the pool's connections. Default: pgxpool's (4 or the number of
	// CPUs, whichever is more).
	MaxConns int32
	// ConnectRetry is how long Open keeps retrying while the server cannot be reached
	// (it is starting, or the network is not up yet). Default 30s; negative: try once.
	// A wrong password, an unknown user or database fails at once.
	ConnectRetry time.Duration
	// Notify makes every change that queues a task send a NOTIFY on NotifyChannel with
	// the task's type, and every cancel request of a leased or running task its id on
	// CancelChannel, so that other servers' Notify and Wakeups channels wake up. They
	// are sent just after the change commits, batched (announce.go). Off by default.
	Notify bool
}

// NotifyChannel is the LISTEN/NOTIFY channel on which a queued task's type is sent
// (Options.Notify).
const NotifyChannel = "paddock_task_ready"

// Store is a store.Store in a PostgreSQL database. Several Stores (several servers) may
// share one database: every change is a single statement or transaction whose
// compare-and-swap is decided by PostgreSQL's row locks.
type Store struct {
	pool   *pgxpool.Pool
	desc   string
	w      *committer
	notify *announcer // nil without Options.Notify
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at dsn (a postgres:// URL or key=value string, as
// libpq takes) and migrates it to the latest schema. Several servers may Open the same
// database at once: migrations run under a session advisory lock.
func Open(ctx context.Context, dsn string, o Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres store: parsing the DSN (server.postgres_dsn): %w: use postgres://user:password@host:5432/db", err)
	}
	if o.MaxConns < 0 {
		return nil, fmt.Errorf("postgres store: MaxConns %d: must be 0 (default) or more", o.MaxConns)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.ConnectRetry == 0 {
		o.ConnectRetry = 30 * time.Second
	}
	c := cfg.ConnConfig
	desc := fmt.Sprintf("postgres://%s@%s/%s", c.User, net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", desc, err)
	}
	if err := connect(ctx, pool, o.ConnectRetry); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres store %s: %w", desc, err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres store %s: %w", desc, err)
	}
	st := &Store{pool: pool, desc: desc, w: newCommitter(pool, writers)}
	if o.Notify {
		st.notify = newAnnouncer(st)
	}
	return st, nil
}

// connect pings the server until it answers, a permanent error comes back, or retry
// has passed.
func connect(ctx context.Context, pool *pgxpool.Pool, retry time.Duration) error {
	deadline := time.Now().Add(retry)
	wait := 100 * time.Millisecond
	for {
		err := pool.Ping(ctx)
		if err == nil {
			return nil
		}
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			switch {
			case pe.Code == "28P01" || pe.Code == "28000":
				return fmt.Errorf("connecting: %w: check the user and password in server.postgres_dsn", err)
			case pe.Code == "3D000":
				return fmt.Errorf("connecting: %w: create the database (createdb) or fix its name in server.postgres_dsn", err)
			case pe.Code != "57P03": // 57P03: the server is starting up
				return fmt.Errorf("connecting: %w", err)
			}
		}
		if ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("connecting (retried for %s): %w: is PostgreSQL running and reachable at this address?", retry, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// migrate applies the embedded migrations and refuses a schema newer than them.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	sub, _ := fs.Sub(migrations, "migrations")
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("preparing the migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("preparing migrations: %w", err)
	}
	srcs := p.ListSources()
	latest := srcs[len(srcs)-1].Version
	if v, err := p.GetDBVersion(ctx); err == nil && v > latest {
		return fmt.Errorf("the database schema is version %d, newer than this paddock's (%d): upgrade paddock, or point it at another database", v, latest)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	return nil
}

// Describe implements store.Store: the server and database, without the password.
func (s *Store) Describe() string { return s.desc }

// Close implements store.Store.
func (s *Store) Close() error {
	if s.notify != nil {
		s.notify.close()
	}
	s.w.close()
	s.pool.Close()
	return nil
}

// Pool returns the store's connection pool (for benchmarks and tools that share it).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// cols lists a task's columns, each prefixed by p ("" or "t.").
func cols(p string) string {
	names := []string{"seq", "id", "type", "payload", "inputs", "priority", "class", "requirements", "timeout_ms", "max_attempts",
		"idempotency_key", "tenant", "state", "attempt", "lease_id", "agent_id", "lease_expires_at", "not_before", "cancel_requested",
		"output", "outputs", "output_sha256", "error", "created_at", "updated_at", "leased_at", "started_at", "finished_at",
		"input_blobs", "output_blobs", "lease_secret", "schedule_deadline", "preemptions", "upstreams", "failure_kind"}
	return p + strings.Join(names, ", "+p)
}

var taskCols = cols("")

// listCols omits the payload, inputs, outputs and blob references (not the upstreams:
// the server reloads the waiting set with List).
const listCols = `seq, id, type, NULL::bytea, NULL::bytea, priority, class, requirements, timeout_ms, max_attempts,
 idempotency_key, tenant, state, attempt, lease_id, agent_id, lease_expires_at, not_before, cancel_requested,
 NULL::bytea, NULL::bytea, output_sha256, error, created_at, updated_at, leased_at, started_at, finished_at, '', '', lease_secret, schedule_deadline, preemptions, upstreams, failure_kind`

// readyCols is listCols with the input blob references (the dispatcher places tasks
// near their inputs).
var readyCols = strings.Replace(listCols, "finished_at, '', ''", "finished_at, input_blobs, ''", 1)

// blobArrays returns m's digests and names as parallel arrays (for unnest).
func blobArrays(m map[string]store.BlobRef) (digests, names []string) {
	digests, names = []string{}, []string{}
	for n, r := range m {
		digests, names = append(digests, r.Digest), append(names, n)
	}
	return digests, names
}

// scanTask scans one row of taskCols or listCols.
func scanTask(row pgx.Row) (store.Task, error) {
	var r rowcodec.Row
	t := &r.Task
	dest := []any{&t.Seq, &t.ID, &t.Type, &t.Payload, &r.Inputs, &t.Priority, &r.Class, &r.Requirements, &r.TimeoutMS, &t.MaxAttempts,
		&t.IdempotencyKey, &t.Tenant, &r.State, &t.Attempt, &r.LeaseID, &t.AgentID, &r.LeaseExpiresAt, &r.NotBefore, &t.CancelRequested,
		&t.Output, &r.Outputs, &t.OutputSHA256, &t.Error, &r.CreatedAt, &r.UpdatedAt, &r.LeasedAt, &r.StartedAt, &r.FinishedAt,
		&r.InputBlobs, &r.OutputBlobs, &t.LeaseSecret, &r.ScheduleDeadline, &t.Preemptions, &r.Upstreams, &r.FailureKind}
	if err := row.Scan(dest...); err != nil {
		return r.Task, err
	}
	return r.Decode()
}

var getQuery = `SELECT ` + taskCols + ` FROM tasks WHERE id = $1`

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (store.Task, error) {
	t, err := scanTask(s.pool.QueryRow(ctx, getQuery, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return t, fmt.Errorf("task %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("reading task %s: %w", id, err)
	}
	return t, nil
}

// Create implements store.Store. One statement inserts the task and its blob
// references; a second reads the task that holds the idempotency key when the insert
// found it taken.
func (s *Store) Create(ctx context.Context, t store.Task) (store.Task, bool, error) {
	q, args, err := s.insertQuery(t)
	if err != nil {
		return t, false, err
	}
	op := func() *writeOp {
		o := &writeOp{q: q, args: args, key: t.ID, uniq: []string{t.ID}}
		if q == insertTask {
			o.merge = mergeInsert
			if t.IdempotencyKey != "" {
				o.uniq = append(o.uniq, t.Tenant+"\x00"+t.IdempotencyKey)
			}
		}
		return o
	}
	for try := 0; ; try++ {
		nts, err := s.w.queryOp(ctx, op())
		if err != nil {
			return t, false, fmt.Errorf("creating task %s: %w", t.ID, err)
		}
		if len(nts) == 1 {
			if s.notify != nil {
				s.notify.queued(nts[0].Type)
			}
			return nts[0], true, nil
		}
		// The key is taken: return the task that holds it.
		old, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE tenant = $1 AND idempotency_key = $2`,
			t.Tenant, t.IdempotencyKey))
		if err == nil {
			return old, false, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) || try > 3 {
			return t, false, fmt.Errorf("creating task %s: looking up idempotency key %q: %w", t.ID, t.IdempotencyKey, err)
		}
		// The holder was deleted in between: insert again.
	}
}

// CreateLease implements store.Store: one statement inserts the task already leased
// under g (lease 1, attempt 1, as Lease would leave it) with its attempt and its blob
// references, or returns no row when its idempotency key is taken (the task holding it
// is then read as Create does).
func (s *Store) CreateLease(ctx context.Context, t store.Task, now time.Time, g store.Grant) (store.Task, bool, error) {
	if err := store.CheckCreateLease(t, g); err != nil {
		return t, false, err
	}
	_, args, err := s.insertQuery(t)
	if err != nil {
		return t, false, err
	}
	args = args[:17]
	args[15] = string(store.Leased)
	args = append(args, g.AgentID, g.Secret, rowcodec.MS(g.ExpiresAt), rowcodec.MS(now))
	q := insertLeased
	if len(t.InputBlobs) > 0 {
		d, n := blobArrays(t.InputBlobs)
		args = append(args, d, n)
		q = insertLeasedBlobs
	}
	nts, err := s.w.queryOp(ctx, &writeOp{q: q, args: args, key: t.ID, uniq: []string{t.ID}})
	if err != nil {
		return t, false, fmt.Errorf("creating and leasing task %s: %w", t.ID, err)
	}
	if len(nts) == 1 {
		return nts[0], true, nil
	}
	old, err := scanTask(s.pool.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE tenant = $1 AND idempotency_key = $2`, t.Tenant, t.IdempotencyKey))
	if err != nil {
		return t, false, fmt.Errorf("creating task %s: looking up idempotency key %q: %w", t.ID, t.IdempotencyKey, err)
	}
	return old, false, nil
}

// insertLeased inserts a task leased ($1…$17 as insertTask with $16 'leased'; $18
// agent, $19 secret, $20 lease expiry, $21 now) with its first attempt;
// insertLeasedBlobs also records its input blobs ($22, $23: digests and names).
var (
	insertLeasedTask = `INSERT INTO tasks (id, type, payload, inputs, priority, class, requirements, timeout_ms,
 max_attempts, idempotency_key, tenant, state, not_before, created_at, updated_at, input_blobs, schedule_deadline, upstreams,
 lease_id, attempt, agent_id, lease_secret, lease_expires_at, leased_at, started_at)
 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$16,$12,$13,$21,$14,$15,$17,1,1,$18,$19,$20,$21,0)
 ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key <> '' DO NOTHING RETURNING ` + taskCols
	insertLeased = `WITH ins AS (` + insertLeasedTask + `),
 att AS (INSERT INTO attempts (task_id, number, lease_id, agent_id, state, leased_at) SELECT id, attempt, lease_id, agent_id, 'running', leased_at FROM ins)
 SELECT ` + taskCols + ` FROM ins`
	insertLeasedBlobs = `WITH ins AS (` + insertLeasedTask + `),
 att AS (INSERT INTO attempts (task_id, number, lease_id, agent_id, state, leased_at) SELECT id, attempt, lease_id, agent_id, 'running', leased_at FROM ins),
 b AS (INSERT INTO task_blobs (digest, task_id, role, name) SELECT x.d, ins.id, 'in', x.n FROM ins, unnest($22::text[], $23::text[]) AS x(d, n))
 SELECT ` + taskCols + ` FROM ins`
)

// CreateBatch implements store.Store: the inserts go in one pipelined batch inside
// one transaction; a task whose idempotency key is taken is looked up after it.
func (s *Store) CreateBatch(ctx context.Context, ts []store.Task) ([]store.Task, []bool, error) {
	b := &pgx.Batch{}
	for _, t := range ts {
		q, args, err := s.insertQuery(t)
		if err != nil {
			return nil, nil, err
		}
		b.Queue(q, args...)
	}
	stored := make([]store.Task, len(ts))
	created := make([]bool, len(ts))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, b)
		var taken []int
		for i := range ts {
			nt, err := scanTask(br.QueryRow())
			switch {
			case err == nil:
				stored[i], created[i] = nt, true
			case errors.Is(err, pgx.ErrNoRows):
				taken = append(taken, i)
			default:
				br.Close()
				return fmt.Errorf("inserting task %s: %w", ts[i].ID, err)
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
		for _, i := range taken {
			old, err := scanTask(tx.QueryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE tenant = $1 AND idempotency_key = $2`,
				ts[i].Tenant, ts[i].IdempotencyKey))
			if err != nil {
				return fmt.Errorf("looking up idempotency key %q of task %s: %w", ts[i].IdempotencyKey, ts[i].ID, err)
			}
			stored[i] = old
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("creating %d tasks: %w", len(ts), err)
	}
	if s.notify != nil { // after the commit
		for i := range stored {
			if created[i] {
				s.notify.queued(stored[i].Type)
			}
		}
	}
	return stored, created, nil
}

// insertQuery checks and encodes t and returns the statement that inserts it (with its
// input blob rows) and returns it, or returns no row when its idempotency key is taken.
func (s *Store) insertQuery(t store.Task) (string, []any, error) {
	if t.ID == "" || t.Type == "" || t.Tenant == "" || t.MaxAttempts < 1 {
		return "", nil, fmt.Errorf("creating task: id, type, tenant and max attempts are required: %w", store.ErrInvalid)
	}
	inputs, err := rowcodec.EncMap(t.Inputs)
	if err != nil {
		return "", nil, fmt.Errorf("encoding inputs of task %s: %w", t.ID, err)
	}
	req, err := json.Marshal(t.Requirements)
	if err != nil {
		return "", nil, fmt.Errorf("encoding requirements of task %s: %w", t.ID, err)
	}
	inBlobs, err := rowcodec.EncBlobs(t.InputBlobs)
	if err != nil {
		return "", nil, fmt.Errorf("encoding input blobs of task %s: %w", t.ID, err)
	}
	ups, err := rowcodec.EncUpstreams(t.Upstreams)
	if err != nil {
		return "", nil, fmt.Errorf("encoding upstreams of task %s: %w", t.ID, err)
	}
	now := rowcodec.MS(t.CreatedAt)
	if now == 0 {
		now = time.Now().UnixMilli()
	}
	args := []any{t.ID, t.Type, t.Payload, inputs, t.Priority, string(t.Class), string(req), t.Timeout.Milliseconds(),
		t.MaxAttempts, t.IdempotencyKey, t.Tenant, rowcodec.MS(t.NotBefore), now, inBlobs, rowcodec.MS(t.ScheduleDeadline),
		string(store.InitialState(t)), ups}
	if len(t.InputBlobs) == 0 { // one plain statement: less for PostgreSQL to set up than a CTE
		return insertTask, args, nil
	}
	digests, names := blobArrays(t.InputBlobs)
	return insertTaskBlobs, append(args, digests, names), nil
}

// insertTask inserts a task ($1…$17, see insertQuery) and returns it, or no row when
// its idempotency key is taken; insertTaskBlobs also records its input blobs
// ($18, $19: digests and names).
var (
	insertTask = `INSERT INTO tasks (id, type, payload, inputs, priority, class, requirements, timeout_ms,
 max_attempts, idempotency_key, tenant, state, not_before, created_at, updated_at, input_blobs, schedule_deadline, upstreams)
 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$16,$12,$13,$13,$14,$15,$17)
 ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key <> '' DO NOTHING RETURNING ` + taskCols
	insertTaskBlobs = `WITH ins AS (` + insertTask + `),
 b AS (INSERT INTO task_blobs (digest, task_id, role, name) SELECT x.d, ins.id, 'in', x.n FROM ins, unnest($18::text[], $19::text[]) AS x(d, n))
 SELECT ` + taskCols + ` FROM ins`
)

// Attempts implements store.Store.
func (s *Store) Attempts(ctx context.Context, id string) ([]store.Attempt, error) {
	rows, err := s.pool.Query(ctx, `SELECT task_id, number, lease_id, agent_id, state, error, retryable, wall_ms, cpu_ms,
 sha256, leased_at, finished_at, failure_kind, host, memory_bytes, bytes_in, bytes_out FROM attempts WHERE task_id = $1 ORDER BY number`, id)
	if err != nil {
		return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
	}
	defer rows.Close()
	var out []store.Attempt
	for rows.Next() {
		var a store.Attempt
		var number int32
		var leaseID, wall, cpu, leased, finished int64
		var state, kind string
		if err := rows.Scan(&a.TaskID, &number, &leaseID, &a.AgentID, &state, &a.Error, &a.Retryable, &wall, &cpu,
			&a.SHA256, &leased, &finished, &kind, &a.Usage.Host, &a.Usage.MemoryBytes, &a.Usage.BytesIn, &a.Usage.BytesOut); err != nil {
			return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
		}
		a.Number, a.LeaseID, a.State, a.FailureKind = int(number), uint64(leaseID), store.State(state), store.FailureKind(kind)
		a.Usage.Wall, a.Usage.CPU = time.Duration(wall)*time.Millisecond, time.Duration(cpu)*time.Millisecond
		a.LeasedAt, a.FinishedAt = rowcodec.FromMS(leased), rowcodec.FromMS(finished)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
	}
	return out, nil
}

func (s *Store) queryTasks(ctx context.Context, q string, args ...any) ([]store.Task, error) {
	rows, err := s.pool.Query(ctx, q, args...)
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
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.State != "" {
		add("state = $%d", string(f.State))
	}
	if f.Type != "" {
		add("type = $%d", f.Type)
	}
	if f.Tenant != "" {
		add("tenant = $%d", f.Tenant)
	}
	if f.Class != "" {
		add("class = $%d", string(f.Class))
	}
	if f.PageToken != "" {
		seq, err := strconv.ParseInt(f.PageToken, 10, 64)
		if err != nil || seq <= 0 {
			return nil, "", fmt.Errorf("page token %q is not one this server returned: %w", f.PageToken, store.ErrInvalid)
		}
		add("seq < $%d", seq)
	}
	q := `SELECT ` + listCols + ` FROM tasks`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY seq DESC LIMIT $%d", len(args))
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

// readyOnlineSQL reads ready online tasks (the partial index tasks_ready_online).
var readyOnlineSQL = `SELECT ` + readyCols + ` FROM tasks WHERE state = 'queued' AND class = 'online' AND type = $1 AND not_before <= $2
 ORDER BY priority DESC, seq LIMIT $3`

// ReadyOnline implements store.Store.
func (s *Store) ReadyOnline(ctx context.Context, typ string, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, readyOnlineSQL, typ, rowcodec.MS(now), limit)
	if err != nil {
		return nil, fmt.Errorf("finding ready online tasks of type %s: %w", typ, err)
	}
	return ts, nil
}

// Ready implements store.Store.
func (s *Store) Ready(ctx context.Context, typ string, now time.Time, limit int) ([]store.Task, error) {
	// Online tasks first (the partial index tasks_ready_online), then batch ones.
	ts, err := s.ReadyOnline(ctx, typ, now, limit)
	if err != nil {
		return nil, err
	}
	if len(ts) == limit {
		return ts, nil
	}
	batch, err := s.queryTasks(ctx, `SELECT `+readyCols+` FROM tasks WHERE state = 'queued' AND type = $1 AND not_before <= $2 AND class <> 'online'
 ORDER BY priority DESC, seq LIMIT $3`, typ, rowcodec.MS(now), limit-len(ts))
	if err != nil {
		return nil, fmt.Errorf("finding ready tasks of type %s: %w", typ, err)
	}
	return append(ts, batch...), nil
}

// ReadyStats implements store.Store: one statement, a LATERAL subquery per type that
// reads at most limit entries of the partial index tasks_ready.
func (s *Store) ReadyStats(ctx context.Context, types []string, now time.Time, limit int) ([]store.ReadyStat, error) {
	if len(types) == 0 || limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT k.type, r.n, r.oldest FROM unnest($3::text[]) AS k(type) CROSS JOIN LATERAL
 (SELECT COUNT(*) AS n, COALESCE(MIN(GREATEST(q.created_at, q.not_before)), 0) AS oldest FROM
   (SELECT created_at, not_before FROM tasks WHERE state = 'queued' AND type = k.type AND not_before <= $1
    ORDER BY priority DESC, seq LIMIT $2) q) r
 WHERE r.n > 0`, rowcodec.MS(now), limit, types)
	if err != nil {
		return nil, fmt.Errorf("measuring ready queues: %w", err)
	}
	defer rows.Close()
	var out []store.ReadyStat
	for rows.Next() {
		var rs store.ReadyStat
		var oldest int64
		if err := rows.Scan(&rs.Type, &rs.N, &oldest); err != nil {
			return nil, fmt.Errorf("measuring ready queues: %w", err)
		}
		rs.Oldest = rowcodec.FromMS(oldest)
		out = append(out, rs)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("measuring ready queues: %w", err)
	}
	return out, nil
}

// leaseQuery leases the granted tasks that are still queued, in one statement: the
// rows are locked FOR UPDATE SKIP LOCKED, so a task another server is leasing (or
// changing) at the same moment is skipped rather than waited for, and the state check
// is made on the locked row, so no task is leased twice.
var leaseQuery = `WITH g AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $5::text[]) WITH ORDINALITY AS g(id, agent, exp, secret, ord)),
 locked AS (SELECT t.seq, g.agent, g.exp, g.secret, g.ord FROM tasks t JOIN g ON t.id = g.id WHERE t.state = 'queued' FOR UPDATE OF t SKIP LOCKED),
 upd AS (UPDATE tasks t SET state = 'leased', lease_id = t.lease_id + 1, attempt = t.attempt + 1, agent_id = l.agent,
   lease_secret = l.secret, lease_expires_at = l.exp, leased_at = $4, started_at = 0, updated_at = $4
   FROM locked l WHERE t.seq = l.seq RETURNING ` + cols("t.") + `, l.ord),
 att AS (INSERT INTO attempts (task_id, number, lease_id, agent_id, state, leased_at)
   SELECT id, attempt, lease_id, agent_id, 'running', $4 FROM upd)
 SELECT ` + taskCols + ` FROM upd ORDER BY ord`

// Lease implements store.Store.
func (s *Store) Lease(ctx context.Context, now time.Time, grants []store.Grant) ([]store.Task, error) {
	if len(grants) == 0 {
		return nil, nil
	}
	ids, agents, exps, secrets := make([]string, len(grants)), make([]string, len(grants)), make([]int64, len(grants)), make([]string, len(grants))
	for i, g := range grants {
		ids[i], agents[i], exps[i], secrets[i] = g.TaskID, g.AgentID, rowcodec.MS(g.ExpiresAt), g.Secret
	}
	out, err := s.w.query(ctx, "", leaseQuery, ids, agents, exps, rowcodec.MS(now), secrets)
	if err != nil {
		return nil, fmt.Errorf("leasing tasks: %w", err)
	}
	return out, nil
}

// Update implements store.Store: one statement changes the task if it is in one of
// u.From (and holds u.LeaseID), ends its attempt and records its output blobs.
func (s *Store) Update(ctx context.Context, u store.Update) (store.Task, error) {
	o, err := s.updateOp(u)
	if err != nil {
		return store.Task{}, err
	}
	ts, err := s.w.queryOp(ctx, o)
	return s.updated(ctx, u, ts, err)
}

// updated is the answer of Update once u's statement returned ts (err): the task
// updated (announcing it to the other servers), or the ErrConflict of a lost swap with
// the task as it is.
func (s *Store) updated(ctx context.Context, u store.Update, ts []store.Task, err error) (store.Task, error) {
	var t store.Task
	if err == nil && len(ts) == 0 {
		err = pgx.ErrNoRows
	}
	if err == nil {
		t = ts[0]
	}
	if err == nil && s.notify != nil {
		switch {
		case t.State == store.Queued:
			s.notify.queued(t.Type)
		case u.CancelRequested && (t.State == store.Leased || t.State == store.Running):
			s.notify.cancel(t.ID)
		}
	}
	if errors.Is(err, pgx.ErrNoRows) {
		t, err = s.Get(ctx, u.TaskID)
		if err != nil {
			return t, err
		}
		return t, fmt.Errorf("task %s is %s under lease %d, not %v under lease %d: %w", u.TaskID, t.State, t.LeaseID, u.From, u.LeaseID, store.ErrConflict)
	}
	if err != nil {
		return t, fmt.Errorf("updating task %s: %w", u.TaskID, err)
	}
	return t, nil
}

// UpdateLease implements store.Store: one statement applies u and, only if it
// applied (the grants' rows are joined to u's returned row), leases the grants as
// leaseQuery does.
func (s *Store) UpdateLease(ctx context.Context, u store.Update, now time.Time, grants []store.Grant) (store.Task, []store.Task, error) {
	for _, g := range grants {
		if g.TaskID == u.TaskID {
			return store.Task{}, nil, fmt.Errorf("updating task %s and leasing it in one change: %w", u.TaskID, store.ErrInvalid)
		}
	}
	if len(grants) == 0 {
		t, err := s.Update(ctx, u)
		return t, nil, err
	}
	o, ctes, err := s.updatePlan(u)
	if err != nil {
		return store.Task{}, nil, err
	}
	ids, agents, exps, secrets := make([]string, len(grants)), make([]string, len(grants)), make([]int64, len(grants)), make([]string, len(grants))
	for i, g := range grants {
		ids[i], agents[i], exps[i], secrets[i] = g.TaskID, g.AgentID, rowcodec.MS(g.ExpiresAt), g.Secret
	}
	arg := func(v any) string {
		o.args = append(o.args, v)
		return "$" + strconv.Itoa(len(o.args))
	}
	pid, pagent, pexp, psecret, pnow := arg(ids), arg(agents), arg(exps), arg(secrets), arg(rowcodec.MS(now))
	o.q = `WITH ` + ctes + `,
 lg AS (SELECT * FROM unnest(` + pid + `::text[], ` + pagent + `::text[], ` + pexp + `::bigint[], ` + psecret + `::text[]) WITH ORDINALITY AS g(id, agent, exp, secret, ord)
   WHERE EXISTS (SELECT 1 FROM upd)),
 llocked AS (SELECT t.seq, lg.agent, lg.exp, lg.secret, lg.ord FROM tasks t JOIN lg ON t.id = lg.id WHERE t.state = 'queued' FOR UPDATE OF t SKIP LOCKED),
 lupd AS (UPDATE tasks t SET state = 'leased', lease_id = t.lease_id + 1, attempt = t.attempt + 1, agent_id = l.agent,
   lease_secret = l.secret, lease_expires_at = l.exp, leased_at = ` + pnow + `, started_at = 0, updated_at = ` + pnow + `
   FROM llocked l WHERE t.seq = l.seq RETURNING ` + cols("t.") + `, l.ord),
 latt AS (INSERT INTO attempts (task_id, number, lease_id, agent_id, state, leased_at)
   SELECT id, attempt, lease_id, agent_id, 'running', ` + pnow + ` FROM lupd)
 SELECT ` + taskCols + ` FROM (SELECT ` + taskCols + `, 0::bigint AS ord FROM upd UNION ALL SELECT ` + taskCols + `, ord FROM lupd) x ORDER BY ord`
	o.merge = noMerge
	ts, err := s.w.queryOp(ctx, o)
	var mine, leased []store.Task
	for _, t := range ts {
		if t.ID == u.TaskID {
			mine = append(mine, t)
		} else {
			leased = append(leased, t)
		}
	}
	t, err := s.updated(ctx, u, mine, err)
	if err != nil {
		return t, nil, err
	}
	return t, leased, nil
}

// updateOp checks u and returns the statement that applies it (see Update).
func (s *Store) updateOp(u store.Update) (*writeOp, error) {
	o, _, err := s.updatePlan(u)
	return o, err
}

// updatePlan is updateOp, and the common table expressions of its statement (the
// update as "upd", returning the task's columns; and what goes with it), for a
// statement that does more after it (UpdateLease; further arguments appended to the
// op's).
func (s *Store) updatePlan(u store.Update) (*writeOp, string, error) {
	if len(u.From) == 0 || !u.To.Valid() {
		return nil, "", fmt.Errorf("updating task %s: From and a valid To are required: %w", u.TaskID, store.ErrInvalid)
	}
	for _, f := range u.From {
		if f != u.To && !store.Legal(f, u.To) {
			return nil, "", fmt.Errorf("updating task %s from %s to %s: %w", u.TaskID, f, u.To, store.ErrInvalid)
		}
	}
	n := rowcodec.MS(u.Now)
	if n == 0 {
		n = time.Now().UnixMilli()
	}
	from := make([]string, len(u.From))
	for i, f := range u.From {
		from[i] = string(f)
	}
	args := []any{u.TaskID, from, string(u.To), n}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	sets := []string{"state = $3", "updated_at = $4"}
	if u.To.Terminal() {
		sets = append(sets, "finished_at = $4")
	}
	if u.Output != nil {
		sets = append(sets, "output = "+arg(*u.Output))
	}
	if u.Outputs != nil {
		b, err := rowcodec.EncMap(u.Outputs)
		if err != nil {
			return nil, "", fmt.Errorf("encoding outputs of task %s: %w", u.TaskID, err)
		}
		sets = append(sets, "outputs = "+arg(b))
	}
	if u.OutputSHA256 != "" {
		sets = append(sets, "output_sha256 = "+arg(u.OutputSHA256))
	}
	if u.OutputBlobs != nil {
		b, err := rowcodec.EncBlobs(u.OutputBlobs)
		if err != nil {
			return nil, "", fmt.Errorf("encoding output blobs of task %s: %w", u.TaskID, err)
		}
		sets = append(sets, "output_blobs = "+arg(b))
	}
	if u.InputBlobs != nil {
		b, err := rowcodec.EncBlobs(u.InputBlobs)
		if err != nil {
			return nil, "", fmt.Errorf("encoding input blobs of task %s: %w", u.TaskID, err)
		}
		sets = append(sets, "input_blobs = "+arg(b))
	}
	if u.Inputs != nil {
		b, err := rowcodec.EncMap(u.Inputs)
		if err != nil {
			return nil, "", fmt.Errorf("encoding inputs of task %s: %w", u.TaskID, err)
		}
		sets = append(sets, "inputs = "+arg(b))
	}
	errText := ""
	if u.Error != nil {
		errText = *u.Error
		sets = append(sets, "error = "+arg(errText))
	}
	if !u.NotBefore.IsZero() {
		sets = append(sets, "not_before = "+arg(rowcodec.MS(u.NotBefore)))
	}
	if u.CancelRequested {
		sets = append(sets, "cancel_requested = TRUE")
	}
	if u.FailureKind != "" && !u.EndAttempt { // a failure without an attempt: the task's own kind
		sets = append(sets, "failure_kind = "+arg(string(u.FailureKind)))
	}
	if u.Preempted {
		sets = append(sets, "preemptions = preemptions + 1")
	}
	if u.Started && !u.StartedAt.IsZero() {
		sets = append(sets, "started_at = "+arg(rowcodec.MS(u.StartedAt)))
	} else if u.Started {
		sets = append(sets, "started_at = $4")
	}
	if !u.LeaseExpiresAt.IsZero() {
		sets = append(sets, "lease_expires_at = "+arg(rowcodec.MS(u.LeaseExpiresAt)))
	}
	upd := `UPDATE tasks SET ` + strings.Join(sets, ", ") + ` WHERE id = $1 AND state = ANY($2::text[])`
	if u.LeaseID != 0 {
		upd += " AND lease_id = " + arg(int64(u.LeaseID))
	}
	upd += " RETURNING " + taskCols
	ctes := `upd AS (` + upd + `)`
	if u.EndAttempt {
		ctes += `, att AS (UPDATE attempts a SET state = $3, error = ` + arg(errText) + `, retryable = ` + arg(u.Retryable) + `, failure_kind = ` + arg(string(u.FailureKind)) +
			`, wall_ms = ` + arg(u.Usage.Wall.Milliseconds()) + `, cpu_ms = ` + arg(u.Usage.CPU.Milliseconds()) +
			`, sha256 = ` + arg(u.OutputSHA256) + `, finished_at = $4, host = ` + arg(u.Usage.Host) + `, memory_bytes = ` + arg(u.Usage.MemoryBytes) +
			`, bytes_in = ` + arg(u.Usage.BytesIn) + `, bytes_out = ` + arg(u.Usage.BytesOut) + ` FROM upd WHERE a.task_id = upd.id AND a.number = upd.attempt)`
	}
	// The rows deleted and the rows inserted are disjoint, so the sub-statements do not
	// depend on the order PostgreSQL runs them in.
	for _, b := range []struct {
		role string
		m    map[string]store.BlobRef
	}{{"out", u.OutputBlobs}, {"in", u.InputBlobs}} {
		if b.m == nil {
			continue
		}
		d, nm := blobArrays(b.m)
		pd, pn := arg(d), arg(nm)
		r := b.role
		ctes += `, nb_` + r + ` AS (SELECT * FROM unnest(` + pd + `::text[], ` + pn + `::text[]) AS x(d, n)),
 del_` + r + ` AS (DELETE FROM task_blobs b USING upd WHERE b.task_id = upd.id AND b.role = '` + r + `' AND (b.digest, b.name) NOT IN (SELECT d, n FROM nb_` + r + `)),
 ins_` + r + ` AS (INSERT INTO task_blobs (digest, task_id, role, name) SELECT nb_` + r + `.d, upd.id, '` + r + `', nb_` + r + `.n FROM upd, nb_` + r + ` ON CONFLICT DO NOTHING)`
	}
	q := `WITH ` + ctes + ` SELECT ` + taskCols + ` FROM upd`
	if !u.EndAttempt && u.OutputBlobs == nil && u.InputBlobs == nil {
		q = upd // one plain statement: less for PostgreSQL to set up than a CTE
	}
	o := &writeOp{q: q, args: args, key: u.TaskID, uniq: []string{u.TaskID}}
	if u.OutputBlobs == nil && u.InputBlobs == nil {
		o.merge = mergeUpdate
	}
	return o, ctes, nil
}

// Renew implements store.Store.
func (s *Store) Renew(ctx context.Context, agentID string, leases []store.LeaseRef, expires time.Time) (int, error) {
	if len(leases) == 0 {
		return 0, nil
	}
	ids, lids := make([]string, len(leases)), make([]int64, len(leases))
	for i, l := range leases {
		ids[i], lids[i] = l.TaskID, int64(l.LeaseID)
	}
	// Lock the rows in id order, so that two renewals of overlapping sets cannot deadlock.
	n, err := s.w.execute(ctx, slices.Min(ids), `UPDATE tasks SET lease_expires_at = $1 WHERE seq IN (
 SELECT t.seq FROM tasks t JOIN unnest($2::text[], $3::bigint[]) AS l(id, lease) ON t.id = l.id AND t.lease_id = l.lease
 WHERE t.agent_id = $4 AND t.state IN ('leased', 'running') ORDER BY t.id FOR UPDATE OF t)`, rowcodec.MS(expires), ids, lids, agentID)
	if err != nil {
		return 0, fmt.Errorf("renewing leases of agent %s: %w", agentID, err)
	}
	return int(n), nil
}

// Expired implements store.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, `SELECT `+listCols+` FROM tasks WHERE state IN ('leased', 'running') AND lease_expires_at < $1
 ORDER BY lease_expires_at LIMIT $2`, rowcodec.MS(now), limit)
	if err != nil {
		return nil, fmt.Errorf("finding expired leases: %w", err)
	}
	return ts, nil
}

// Live implements store.Store.
func (s *Store) Live(ctx context.Context) ([]store.Task, error) {
	ts, err := s.queryTasks(ctx, `SELECT `+listCols+` FROM tasks WHERE state IN ('leased', 'running') ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("listing live tasks: %w", err)
	}
	return ts, nil
}

// BlobInUse implements store.Store.
func (s *Store) BlobInUse(ctx context.Context, digest string, since time.Time) (bool, error) {
	var used bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM task_blobs b JOIN tasks t ON t.id = b.task_id
 WHERE b.digest = $1 AND ((b.role = 'in' AND t.state IN ('waiting', 'queued', 'leased', 'running')) OR t.finished_at > $2))
 OR EXISTS (SELECT 1 FROM blob_refs WHERE digest = $1 AND last_ref > $2)`,
		digest, rowcodec.MS(since)).Scan(&used)
	if err != nil {
		return false, fmt.Errorf("checking whether blob %s is in use: %w", digest, err)
	}
	return used, nil
}

// TouchBlobs implements store.Store.
func (s *Store) TouchBlobs(ctx context.Context, digests []string, at time.Time) error {
	if len(digests) == 0 {
		return nil
	}
	// Sorted and unique, so that concurrent touches lock the rows in one order.
	ds := slices.Clone(digests)
	slices.Sort(ds)
	ds = slices.Compact(ds)
	if _, err := s.pool.Exec(ctx, `INSERT INTO blob_refs (digest, last_ref) SELECT d, $2 FROM unnest($1::text[]) AS d
 ON CONFLICT (digest) DO UPDATE SET last_ref = GREATEST(blob_refs.last_ref, excluded.last_ref)`, ds, rowcodec.MS(at)); err != nil {
		return fmt.Errorf("recording references to %d blobs: %w", len(ds), err)
	}
	return nil
}

// DeleteFinished implements store.Store.
func (s *Store) DeleteFinished(ctx context.Context, st store.State, before time.Time, limit int) (int, error) {
	if !st.Terminal() {
		return 0, fmt.Errorf("deleting finished tasks: state %q is not terminal", st)
	}
	if limit <= 0 {
		return 0, nil
	}
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The finished states in the text let every plan use the partial index tasks_finished.
		rows, err := tx.Query(ctx, `DELETE FROM tasks WHERE id IN (
  SELECT id FROM tasks WHERE state = $1 AND state IN ('succeeded', 'failed', 'cancelled', 'dead') AND finished_at < $2
  ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING id`, string(st), rowcodec.MS(before), limit)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		for _, q := range []string{`DELETE FROM attempts WHERE task_id = ANY($1)`, `DELETE FROM task_blobs WHERE task_id = ANY($1)`,
			`DELETE FROM task_logs WHERE task_id = ANY($1)`} {
			if _, err := tx.Exec(ctx, q, ids); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting %s tasks finished before %s: %w", st, before.Format(time.RFC3339), err)
	}
	return n, nil
}

// Counts implements store.Store.
func (s *Store) Counts(ctx context.Context) ([]store.Count, error) {
	rows, err := s.pool.Query(ctx, `SELECT type, state, COUNT(*) FROM tasks WHERE state IN ('waiting', 'queued', 'leased', 'running') GROUP BY type, state ORDER BY type, state`)
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
