package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/paddockvm/paddock/sched/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune the database.
type Options struct {
	// Synchronous is SQLite's synchronous pragma: "FULL" (default: a commit is on disk
	// when it returns, so an acknowledged task survives a power loss) or "NORMAL" (an
	// fsync only at WAL checkpoints: survives the process being killed, but a power loss
	// or kernel crash may lose the last commits; faster, see BenchmarkSynchronous).
	Synchronous string
	// BusyTimeout is how long a connection waits for a lock. Default 10s.
	BusyTimeout time.Duration
}

// Store is a store.Store in one SQLite file.
type Store struct {
	path string
	w    *sql.DB // the single writer connection
	r    *sql.DB // readers

	wc     *sql.Conn            // w's connection, used only by writeLoop
	wstmts map[string]*sql.Stmt // query text -> statement prepared on wc (writeLoop only)
	rstmts sync.Map             // query text -> *sql.Stmt prepared on r

	// Group commit: every change is a writeOp run by writeLoop, which runs the ops
	// waiting together in one transaction and answers each only after the commit.
	ops       chan *writeOp
	quit      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// writeOp is one change: fn runs inside the batch's transaction. fn must not write
// anything when it returns an error of the store (ErrConflict, ErrNotFound,
// ErrInvalid): those are answers, not failures, and the batch commits. Any other error
// rolls the batch back, and its ops run again one transaction each.
type writeOp struct {
	fn   func(tx *wtx) error
	done chan error
}

// maxBatch bounds the ops of one transaction.
const maxBatch = 256

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates it to the latest
// schema. A missing directory of path is created 0700; the database and its -wal and
// -shm files are 0600 whatever the umask (existing ones are made 0600).
func Open(ctx context.Context, path string, o Options) (*Store, error) {
	if o.Synchronous == "" {
		o.Synchronous = "FULL"
	}
	switch strings.ToUpper(o.Synchronous) {
	case "NORMAL", "FULL":
	default:
		return nil, fmt.Errorf("sqlite store: Synchronous %q: use NORMAL or FULL", o.Synchronous)
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = 10 * time.Second
	}
	if err := privateFiles(path); err != nil {
		return nil, err
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
	wc, err := w.Conn(ctx)
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("opening sqlite database %s: %w", path, err)
	}
	st := &Store{path: path, w: w, r: r, wc: wc, wstmts: map[string]*sql.Stmt{},
		ops: make(chan *writeOp), quit: make(chan struct{}), done: make(chan struct{})}
	go st.writeLoop()
	return st, nil
}

// privateFiles creates path's directory (0700) if it is missing, and the database
// file 0600, and makes existing database, WAL and shared-memory files 0600. SQLite
// creates the -wal and -shm files with the database file's mode.
func privateFiles(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating the database directory %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("making the database directory %s private: %w", dir, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("creating the database %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("making %s private (0600): %w", p, err)
		}
	}
	return nil
}

var errClosed = errors.New("sqlite store is closed")

// commits counts the transactions committed by every store of this process (a
// benchmark's figure: writes per commit).
var commits atomic.Int64

// write runs fn in the next group-commit transaction and returns once that
// transaction committed (or fn failed).
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) error {
	op := &writeOp{fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- op:
	case <-s.quit:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-op.done // the batch is short: wait for its commit even if ctx ends
}

func (s *Store) writeLoop() {
	defer close(s.done)
	for {
		var op *writeOp
		select {
		case op = <-s.ops:
		case <-s.quit:
			return
		}
		// Let the goroutines that are ready to run (callers about to queue a write)
		// queue it before the batch is taken: commits are most of a write's cost (each
		// writes its dirty pages to the WAL, two system calls a page), and under load
		// this one yield halved the commits per task (BenchmarkLifecycle: 0.34-0.76 →
		// 0.18-0.22) for 10-15 % less CPU. With nothing else to run it returns at once.
		runtime.Gosched()
		batch := []*writeOp{op}
	more:
		for len(batch) < maxBatch {
			select {
			case op := <-s.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		s.runBatch(batch)
	}
}

// isAnswer reports whether err is a store answer (no write happened) rather than a failure.
func isAnswer(err error) bool {
	return errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid)
}

// runBatch runs the ops in one transaction; if that fails, each in its own.
func (s *Store) runBatch(batch []*writeOp) {
	errs := make([]error, len(batch))
	err := func() error {
		tx := &wtx{s: s}
		if _, err := tx.exec("BEGIN IMMEDIATE"); err != nil {
			return fmt.Errorf("beginning a transaction: %w", err)
		}
		for i, op := range batch {
			errs[i] = op.fn(tx)
			if errs[i] != nil && !isAnswer(errs[i]) {
				tx.exec("ROLLBACK")
				return errs[i]
			}
		}
		if _, err := tx.exec("COMMIT"); err != nil {
			tx.exec("ROLLBACK")
			return fmt.Errorf("committing: %w", err)
		}
		commits.Add(1)
		return nil
	}()
	if err == nil {
		for i, op := range batch {
			op.done <- errs[i]
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- err
		return
	}
	for _, op := range batch {
		s.runBatch([]*writeOp{op})
	}
}

// wtx is the transaction of one batch on the writer connection; its statements
// are prepared once and kept.
type wtx struct{ s *Store }

func (t *wtx) stmt(q string) (*sql.Stmt, error) {
	if st := t.s.wstmts[q]; st != nil {
		return st, nil
	}
	st, err := t.s.wc.PrepareContext(context.Background(), q)
	if err != nil {
		return nil, fmt.Errorf("preparing %q: %w", q, err)
	}
	t.s.wstmts[q] = st
	return st, nil
}

func (t *wtx) exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.Exec(args...)
}

func (t *wtx) query(q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.Query(args...)
}

func (t *wtx) queryRow(q string, args ...any) *sql.Row {
	st, err := t.stmt(q)
	if err != nil {
		return t.s.wc.QueryRowContext(context.Background(), q, args...) // reports the same error on Scan
	}
	return st.QueryRow(args...)
}

func (s *Store) prepared(cache *sync.Map, db *sql.DB, q string) (*sql.Stmt, error) {
	if v, ok := cache.Load(q); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := db.Prepare(q)
	if err != nil {
		return nil, fmt.Errorf("preparing %q: %w", q, err)
	}
	if v, loaded := cache.LoadOrStore(q, st); loaded {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// Describe implements store.Store.
func (s *Store) Describe() string { return "sqlite:" + s.path }

// Close implements store.Store.
func (s *Store) Close() error {
	err := errClosed
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		for _, st := range s.wstmts {
			st.Close()
		}
		s.rstmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
		err = errors.Join(s.r.Close(), s.wc.Close(), s.w.Close())
	})
	if err == errClosed {
		return nil
	}
	return err
}

const taskCols = `seq, id, type, payload, inputs, priority, class, requirements, timeout_ms, max_attempts,
 idempotency_key, tenant, state, attempt, lease_id, agent_id, lease_expires_at, not_before, cancel_requested,
 output, outputs, output_sha256, error, created_at, updated_at, leased_at, started_at, finished_at,
 input_blobs, output_blobs, lease_secret, schedule_deadline, preemptions, upstreams, failure_kind`

// listCols omits the payload, inputs, outputs and blob references (not the upstreams:
// the server reloads the waiting set with List).
const listCols = `seq, id, type, NULL, NULL, priority, class, requirements, timeout_ms, max_attempts,
 idempotency_key, tenant, state, attempt, lease_id, agent_id, lease_expires_at, not_before, cancel_requested,
 NULL, NULL, output_sha256, error, created_at, updated_at, leased_at, started_at, finished_at, '', '', lease_secret, schedule_deadline, preemptions, upstreams, failure_kind`

// readyCols is listCols with the input blob references (the dispatcher places tasks
// near their inputs).
var readyCols = strings.Replace(listCols, "finished_at, '', ''", "finished_at, input_blobs, ''", 1)

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

func encUpstreams(m map[string]store.Upstream) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

func encBlobs(m map[string]store.BlobRef) (string, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// Roles of a task_blobs row.
const (
	roleIn  = "in"
	roleOut = "out"
)

// putBlobRefs records the blobs a task names in task_blobs, replacing its rows of role.
func (t *wtx) putBlobRefs(taskID, role string, m map[string]store.BlobRef) error {
	if _, err := t.exec(`DELETE FROM task_blobs WHERE task_id = ? AND role = ?`, taskID, role); err != nil {
		return fmt.Errorf("recording the blobs of task %s: %w", taskID, err)
	}
	for name, ref := range m {
		if _, err := t.exec(`INSERT INTO task_blobs (digest, task_id, role, name) VALUES (?,?,?,?)`, ref.Digest, taskID, role, name); err != nil {
			return fmt.Errorf("recording blob %s (%s) of task %s: %w", name, ref.Digest, taskID, err)
		}
	}
	return nil
}

func scanTask(sc scanner) (store.Task, error) {
	var t store.Task
	var inputs, outputs []byte
	var inBlobs, outBlobs, ups string
	var req string
	var timeoutMS, leaseExp, notBefore, created, updated, leased, started, finished, schedDeadline int64
	var failureKind string
	var cancelReq int
	var state, class string
	var leaseID int64
	err := sc.Scan(&t.Seq, &t.ID, &t.Type, &t.Payload, &inputs, &t.Priority, &class, &req, &timeoutMS, &t.MaxAttempts,
		&t.IdempotencyKey, &t.Tenant, &state, &t.Attempt, &leaseID, &t.AgentID, &leaseExp, &notBefore, &cancelReq,
		&t.Output, &outputs, &t.OutputSHA256, &t.Error, &created, &updated, &leased, &started, &finished,
		&inBlobs, &outBlobs, &t.LeaseSecret, &schedDeadline, &t.Preemptions, &ups, &failureKind)
	if err != nil {
		return t, err
	}
	t.FailureKind = store.FailureKind(failureKind)
	t.ScheduleDeadline = fromMS(schedDeadline)
	if ups != "" {
		if err := json.Unmarshal([]byte(ups), &t.Upstreams); err != nil {
			return t, fmt.Errorf("decoding upstreams of task %s: %w", t.ID, err)
		}
	}
	if inBlobs != "" {
		if err := json.Unmarshal([]byte(inBlobs), &t.InputBlobs); err != nil {
			return t, fmt.Errorf("decoding input blobs of task %s: %w", t.ID, err)
		}
	}
	if outBlobs != "" {
		if err := json.Unmarshal([]byte(outBlobs), &t.OutputBlobs); err != nil {
			return t, fmt.Errorf("decoding output blobs of task %s: %w", t.ID, err)
		}
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

const getQuery = `SELECT ` + taskCols + ` FROM tasks WHERE id = ?`

// rowTask scans the task of row, read by id.
func rowTask(row *sql.Row, id string) (store.Task, error) {
	t, err := scanTask(row)
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
	stored, created, err := s.CreateBatch(ctx, []store.Task{t})
	if err != nil {
		return t, false, err
	}
	return stored[0], created[0], nil
}

// CreateBatch implements store.Store.
func (s *Store) CreateBatch(ctx context.Context, ts []store.Task) ([]store.Task, []bool, error) {
	rows := make([]newRow, len(ts))
	for i, t := range ts {
		var err error
		if rows[i], err = encodeNew(t); err != nil {
			return nil, nil, err
		}
	}
	stored := make([]store.Task, len(ts))
	created := make([]bool, len(ts))
	err := s.write(ctx, func(tx *wtx) error {
		for i, r := range rows {
			var err error
			if stored[i], created[i], err = tx.create(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if len(ts) == 1 {
			return nil, nil, fmt.Errorf("creating task %s: %w", ts[0].ID, err)
		}
		return nil, nil, fmt.Errorf("creating %d tasks: %w", len(ts), err)
	}
	return stored, created, nil
}

// CreateLease implements store.Store: the insert and the lease are one op of the
// group commit.
func (s *Store) CreateLease(ctx context.Context, t store.Task, now time.Time, g store.Grant) (store.Task, bool, error) {
	if err := store.CheckCreateLease(t, g); err != nil {
		return t, false, err
	}
	r, err := encodeNew(t)
	if err != nil {
		return t, false, err
	}
	var stored store.Task
	var created bool
	err = s.write(ctx, func(tx *wtx) error {
		var err error
		if stored, created, err = tx.create(r); err != nil || !created {
			return err
		}
		leased, err := tx.lease(nil, ms(now), []store.Grant{g})
		if err != nil {
			return err
		}
		if len(leased) != 1 { // cannot happen: the row was inserted queued just now
			return fmt.Errorf("leasing task %s as it was created: %d rows leased", t.ID, len(leased))
		}
		stored = leased[0]
		return nil
	})
	if err != nil {
		return t, false, fmt.Errorf("creating and leasing task %s: %w", t.ID, err)
	}
	return stored, created, nil
}

// newRow is a task to insert with its encoded columns.
type newRow struct {
	t                     store.Task
	inputs                []byte
	req, inBlobs, ups     string
	createdMS, notBeforMS int64
}

// encodeNew checks and encodes a task for Create.
func encodeNew(t store.Task) (newRow, error) {
	if t.ID == "" || t.Type == "" || t.Tenant == "" || t.MaxAttempts < 1 {
		return newRow{}, fmt.Errorf("creating task: id, type, tenant and max attempts are required: %w", store.ErrInvalid)
	}
	r := newRow{t: t, createdMS: ms(t.CreatedAt), notBeforMS: ms(t.NotBefore)}
	var err error
	if r.inputs, err = encMap(t.Inputs); err != nil {
		return r, fmt.Errorf("encoding inputs of task %s: %w", t.ID, err)
	}
	req, err := json.Marshal(t.Requirements)
	if err != nil {
		return r, fmt.Errorf("encoding requirements of task %s: %w", t.ID, err)
	}
	r.req = string(req)
	if r.inBlobs, err = encBlobs(t.InputBlobs); err != nil {
		return r, fmt.Errorf("encoding input blobs of task %s: %w", t.ID, err)
	}
	if r.ups, err = encUpstreams(t.Upstreams); err != nil {
		return r, fmt.Errorf("encoding upstreams of task %s: %w", t.ID, err)
	}
	if r.createdMS == 0 {
		r.createdMS = time.Now().UnixMilli()
	}
	return r, nil
}

// create inserts one task, or returns the task that holds its idempotency key.
func (tx *wtx) create(r newRow) (store.Task, bool, error) {
	t := r.t
	if t.IdempotencyKey != "" {
		old, err := scanTask(tx.queryRow(`SELECT `+taskCols+` FROM tasks WHERE tenant = ? AND idempotency_key = ?`, t.Tenant, t.IdempotencyKey))
		if err == nil {
			return old, false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return t, false, fmt.Errorf("looking up idempotency key %q: %w", t.IdempotencyKey, err)
		}
	}
	// No RETURNING: every column but seq is what was inserted or its default, so the
	// task is built here (reading the row back cost as much as inserting it).
	res, err := tx.exec(`INSERT INTO tasks (id, type, payload, inputs, priority, class, requirements, timeout_ms,
 max_attempts, idempotency_key, tenant, state, not_before, created_at, updated_at, input_blobs, schedule_deadline, upstreams) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		t.ID, t.Type, t.Payload, r.inputs, t.Priority, string(t.Class), r.req, t.Timeout.Milliseconds(),
		t.MaxAttempts, t.IdempotencyKey, t.Tenant, string(store.InitialState(t)), r.notBeforMS, r.createdMS, r.createdMS, r.inBlobs, ms(t.ScheduleDeadline), r.ups)
	if err != nil {
		return t, false, fmt.Errorf("inserting task %s: %w", t.ID, err)
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return t, false, fmt.Errorf("inserting task %s: reading its seq: %w", t.ID, err)
	}
	if len(t.InputBlobs) > 0 {
		if err := tx.putBlobRefs(t.ID, roleIn, t.InputBlobs); err != nil {
			return t, false, err
		}
	}
	return r.inserted(seq), true, nil
}

// inserted is the task r became when inserted as row seq, as Get reads it back.
func (r newRow) inserted(seq int64) store.Task {
	t := r.t
	nt := store.Task{ID: t.ID, Seq: seq, Type: t.Type, Payload: t.Payload, Priority: t.Priority, Class: t.Class,
		Timeout: time.Duration(t.Timeout.Milliseconds()) * time.Millisecond, MaxAttempts: t.MaxAttempts,
		IdempotencyKey: t.IdempotencyKey, Tenant: t.Tenant, ScheduleDeadline: fromMS(ms(t.ScheduleDeadline)),
		State: store.InitialState(t), NotBefore: fromMS(r.notBeforMS), CreatedAt: fromMS(r.createdMS), UpdatedAt: fromMS(r.createdMS)}
	if len(t.Payload) == 0 {
		nt.Payload = nil
	}
	if len(t.Inputs) > 0 {
		nt.Inputs = t.Inputs
	}
	if len(t.InputBlobs) > 0 {
		nt.InputBlobs = t.InputBlobs
	}
	if len(t.Upstreams) > 0 {
		nt.Upstreams = t.Upstreams
	}
	if r.req != "{}" {
		nt.Requirements = t.Requirements
	}
	return nt
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id string) (store.Task, error) {
	st, err := s.prepared(&s.rstmts, s.r, getQuery)
	if err != nil {
		return store.Task{}, err
	}
	return rowTask(st.QueryRowContext(ctx, id), id)
}

// Attempts implements store.Store.
func (s *Store) Attempts(ctx context.Context, id string) ([]store.Attempt, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT task_id, number, lease_id, agent_id, state, error, retryable, wall_ms, cpu_ms,
 sha256, leased_at, finished_at, failure_kind, host, memory_bytes, bytes_in, bytes_out FROM attempts WHERE task_id = ? ORDER BY number`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
	}
	defer rows.Close()
	var out []store.Attempt
	for rows.Next() {
		var a store.Attempt
		var leaseID, wall, cpu, leased, finished int64
		var state, kind string
		var retryable int
		if err := rows.Scan(&a.TaskID, &a.Number, &leaseID, &a.AgentID, &state, &a.Error, &retryable, &wall, &cpu,
			&a.SHA256, &leased, &finished, &kind, &a.Usage.Host, &a.Usage.MemoryBytes, &a.Usage.BytesIn, &a.Usage.BytesOut); err != nil {
			return nil, fmt.Errorf("reading attempts of task %s: %w", id, err)
		}
		a.LeaseID, a.State, a.Retryable, a.FailureKind = uint64(leaseID), store.State(state), retryable != 0, store.FailureKind(kind)
		a.Usage.Wall, a.Usage.CPU = time.Duration(wall)*time.Millisecond, time.Duration(cpu)*time.Millisecond
		a.LeasedAt, a.FinishedAt = fromMS(leased), fromMS(finished)
		out = append(out, a)
	}
	return out, rows.Err()
}

func (s *Store) queryTasks(ctx context.Context, q string, args ...any) ([]store.Task, error) {
	return s.queryTasksMax(ctx, q, -1, args...)
}

// queryLimit runs q, which ends in "LIMIT ?", for at most limit tasks. The limit is
// written into the statement, rounded up to a power of two (one prepared statement per
// power), and the rows past it are never read: a LIMIT bound as a parameter whose value
// changes makes SQLite prepare the statement again on its next step (the planner uses
// the limit), and the dispatcher asks for a different number of ready tasks nearly every
// round — that re-preparing was 44 % of a Ready call's CPU (BenchmarkReady).
func (s *Store) queryLimit(ctx context.Context, q string, limit int, args ...any) ([]store.Task, error) {
	if limit <= 0 {
		return nil, nil
	}
	body, ok := strings.CutSuffix(q, "LIMIT ?")
	if !ok {
		return nil, fmt.Errorf("query %q does not end in LIMIT ?", q)
	}
	return s.queryTasksMax(ctx, body+"LIMIT "+strconv.Itoa(ceilPow2(limit)), limit, args...)
}

// ceilPow2 is the least power of two ≥ n (n ≥ 1).
func ceilPow2(n int) int {
	return 1 << bits.Len(uint(n-1))
}

// queryTasksMax runs q and reads at most max of its rows (all of them when max < 0).
func (s *Store) queryTasksMax(ctx context.Context, q string, max int, args ...any) ([]store.Task, error) {
	st, err := s.prepared(&s.rstmts, s.r, q)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Task
	for len(out) != max && rows.Next() {
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
	ts, err := s.queryLimit(ctx, q, limit+1, args...)
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

// A state a query selects on is written in its SQL as a literal ('queued'), never bound
// as a parameter: SQLite compares a bound "state = ?" with the WHERE of the partial
// indexes on tasks (state = 'queued' AND ...) when it plans the statement, and a
// parameter so compared makes the prepared statement expire at every new binding, so
// that it was parsed and planned again on every run (a third of the cost of a ready read).

// The queries the dispatch loop and the lease sweep run most; each is answered from
// its partial index (migration 00018; TestQueryPlans checks that). Without statistics
// SQLite would answer the expired leases from tasks_state_seq and sort them, hence the
// index named there.
var (
	readyOnlineSQL = `SELECT ` + readyCols + ` FROM tasks INDEXED BY tasks_ready_online WHERE state = 'queued' AND class = 'online' AND type = ? AND not_before <= ?
 ORDER BY priority DESC, seq LIMIT ?`
	readyBatchSQL = `SELECT ` + readyCols + ` FROM tasks WHERE state = 'queued' AND type = ? AND not_before <= ? AND class <> 'online'
 ORDER BY priority DESC, seq LIMIT ?`
	expiredSQL = `SELECT ` + listCols + ` FROM tasks INDEXED BY tasks_lease_expiry WHERE state IN ('leased', 'running') AND lease_expires_at < ?
 ORDER BY lease_expires_at LIMIT ?`
)

// ReadyOnline implements store.Store.
func (s *Store) ReadyOnline(ctx context.Context, typ string, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryLimit(ctx, readyOnlineSQL, limit, typ, ms(now))
	if err != nil {
		return nil, fmt.Errorf("finding ready online tasks of type %s: %w", typ, err)
	}
	return ts, nil
}

// Ready implements store.Store.
func (s *Store) Ready(ctx context.Context, typ string, now time.Time, limit int) ([]store.Task, error) {
	// Online tasks first (the partial index tasks_ready_online, named: without
	// statistics SQLite picks tasks_ready and reads every queued task of the type to find
	// the online ones), then batch ones.
	if limit <= 0 {
		return nil, nil
	}
	n := ms(now)
	ts, err := s.queryTasksMax(ctx, readySQL(ceilPow2(limit)), limit, typ, n, typ, n) // each arm's type and now
	if err != nil {
		return nil, fmt.Errorf("finding ready tasks of type %s: %w", typ, err)
	}
	return ts, nil
}

// readySQL is Ready in one statement, each arm reading up to n tasks: the online ones
// (readyOnlineSQL), then the batch ones (readyBatchSQL). SQLite runs the arms of a
// UNION ALL one after the other, returning the first's rows before the second's, and
// the caller stops reading at its limit, so the batch arm is not run when online tasks
// fill it. One statement, where two cost a round trip through the driver each, on
// every dispatch round (the contract's ReadyOrder holds the order).
func readySQL(n int) string {
	if k := bits.Len(uint(n - 1)); k < len(readyUnion) && 1<<k == n {
		return readyUnion[k]
	}
	return buildReadySQL(n)
}

// readyUnion holds readySQL(1 << k) for the limits dispatch rounds ask (maxScan: 1000).
var readyUnion = func() (u [11]string) {
	for k := range u {
		u[k] = buildReadySQL(1 << k)
	}
	return u
}()

func buildReadySQL(n int) string {
	lim := "LIMIT " + strconv.Itoa(n)
	on, _ := strings.CutSuffix(readyOnlineSQL, "LIMIT ?")
	batch, _ := strings.CutSuffix(readyBatchSQL, "LIMIT ?")
	return `SELECT * FROM (` + on + lim + `) UNION ALL SELECT * FROM (` + batch + lim + `)`
}

// readyStatsSQL measures the ready queue of each type in the JSON array ?3: two
// correlated subqueries per type, each reading at most ?2 entries of the partial index
// tasks_ready (named: without statistics SQLite may pick another), so a backlog costs
// no more than ?2 rows per type.
const readyStatsSQL = `SELECT k.value,
 (SELECT COUNT(*) FROM (SELECT 1 FROM tasks INDEXED BY tasks_ready WHERE state = 'queued' AND type = k.value AND not_before <= ?1
   ORDER BY priority DESC, seq LIMIT ?2)),
 (SELECT MIN(MAX(created_at, not_before)) FROM (SELECT created_at, not_before FROM tasks INDEXED BY tasks_ready
   WHERE state = 'queued' AND type = k.value AND not_before <= ?1 ORDER BY priority DESC, seq LIMIT ?2))
 FROM json_each(?3) AS k`

// ReadyStats implements store.Store.
func (s *Store) ReadyStats(ctx context.Context, types []string, now time.Time, limit int) ([]store.ReadyStat, error) {
	if len(types) == 0 || limit <= 0 {
		return nil, nil
	}
	names, err := json.Marshal(types)
	if err != nil {
		return nil, fmt.Errorf("measuring ready queues: %w", err)
	}
	st, err := s.prepared(&s.rstmts, s.r, readyStatsSQL)
	if err != nil {
		return nil, fmt.Errorf("measuring ready queues: %w", err)
	}
	rows, err := st.QueryContext(ctx, ms(now), limit, string(names))
	if err != nil {
		return nil, fmt.Errorf("measuring ready queues: %w", err)
	}
	defer rows.Close()
	var out []store.ReadyStat
	for rows.Next() {
		var rs store.ReadyStat
		var oldest sql.NullInt64
		if err := rows.Scan(&rs.Type, &rs.N, &oldest); err != nil {
			return nil, fmt.Errorf("measuring ready queues: %w", err)
		}
		if rs.N > 0 {
			rs.Oldest = fromMS(oldest.Int64)
			out = append(out, rs)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("measuring ready queues: %w", err)
	}
	return out, nil
}

// Lease implements store.Store. The grants are applied leaseChunk at a time, each
// chunk as one UPDATE ... FROM its grants and one INSERT of their attempts (a statement
// per task cost more than the task's other writes together).
func (s *Store) Lease(ctx context.Context, now time.Time, grants []store.Grant) ([]store.Task, error) {
	if len(grants) == 0 {
		return nil, nil
	}
	n := ms(now)
	var out []store.Task
	err := s.write(ctx, func(tx *wtx) error {
		out = out[:0]
		for i := 0; i < len(grants); i += leaseChunk {
			var err error
			if out, err = tx.lease(out, n, grants[i:min(i+leaseChunk, len(grants))]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("leasing tasks: %w", err)
	}
	return out, nil
}

// leaseChunk is the most grants one statement applies (and so the number of shapes of
// the two statements kept prepared).
const leaseChunk = 32

// lease applies grants (at most leaseChunk) at n and appends the tasks leased to out:
// those still queued (a grant for a task no longer queued is left out).
func (tx *wtx) lease(out []store.Task, n int64, grants []store.Grant) ([]store.Task, error) {
	k := len(grants)
	args := make([]any, 0, 4*k+3)
	for _, g := range grants {
		args = append(args, g.TaskID, g.AgentID, g.Secret, ms(g.ExpiresAt))
	}
	args = append(args, string(store.Leased), n, n)
	rows, err := tx.query(`WITH g(g_id, g_agent, g_secret, g_expires) AS (VALUES (?,?,?,?)`+strings.Repeat(",(?,?,?,?)", k-1)+`)
 UPDATE tasks SET state = ?, lease_id = lease_id + 1, attempt = attempt + 1, agent_id = g_agent, lease_secret = g_secret,
 lease_expires_at = g_expires, leased_at = ?, started_at = 0, updated_at = ? FROM g WHERE tasks.id = g_id AND tasks.state = 'queued'
 RETURNING `+taskCols, args...)
	if err != nil {
		return out, fmt.Errorf("leasing %d tasks: %w", k, err)
	}
	first := len(out)
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			rows.Close()
			return out, fmt.Errorf("leasing %d tasks: %w", k, err)
		}
		out = append(out, t)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return out, fmt.Errorf("leasing %d tasks: %w", k, err)
	}
	leased := out[first:]
	if len(leased) == 0 {
		return out, nil
	}
	args = args[:0]
	for _, t := range leased {
		args = append(args, t.ID, t.Attempt, int64(t.LeaseID), t.AgentID, string(store.Running), n)
	}
	if _, err := tx.exec(`INSERT INTO attempts (task_id, number, lease_id, agent_id, state, leased_at) VALUES (?,?,?,?,?,?)`+
		strings.Repeat(",(?,?,?,?,?,?)", len(leased)-1), args...); err != nil {
		return out, fmt.Errorf("recording the attempts of %d leased tasks: %w", len(leased), err)
	}
	return out, nil
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, u store.Update) (store.Task, error) {
	p, err := planUpdate(u)
	if err != nil {
		return store.Task{}, err
	}
	var t store.Task
	err = s.write(ctx, func(tx *wtx) error {
		var err error
		t, err = tx.update(p)
		return err
	})
	return t, err
}

// UpdateLease implements store.Store: the update and the leases run in one
// transaction of the group commit.
func (s *Store) UpdateLease(ctx context.Context, u store.Update, now time.Time, grants []store.Grant) (store.Task, []store.Task, error) {
	for _, g := range grants {
		if g.TaskID == u.TaskID {
			return store.Task{}, nil, fmt.Errorf("updating task %s and leasing it in one change: %w", u.TaskID, store.ErrInvalid)
		}
	}
	p, err := planUpdate(u)
	if err != nil {
		return store.Task{}, nil, err
	}
	n := ms(now)
	var t store.Task
	var out []store.Task
	err = s.write(ctx, func(tx *wtx) error {
		var err error
		out = out[:0]
		if t, err = tx.update(p); err != nil {
			return err // a lost swap writes nothing: no lease either
		}
		for i := 0; i < len(grants); i += leaseChunk {
			if out, err = tx.lease(out, n, grants[i:min(i+leaseChunk, len(grants))]); err != nil {
				return fmt.Errorf("leasing tasks after updating task %s: %w", u.TaskID, err)
			}
		}
		return nil
	})
	if err != nil {
		return t, nil, err
	}
	return t, out, nil
}

// updatePlan is an Update checked, with its statement.
type updatePlan struct {
	u    store.Update
	n    int64 // u.Now in ms
	q    string
	args []any
}

// planUpdate checks u and builds the statement that applies it.
func planUpdate(u store.Update) (updatePlan, error) {
	if len(u.From) == 0 || !u.To.Valid() {
		return updatePlan{}, fmt.Errorf("updating task %s: From and a valid To are required: %w", u.TaskID, store.ErrInvalid)
	}
	for _, f := range u.From {
		if f != u.To && !store.Legal(f, u.To) {
			return updatePlan{}, fmt.Errorf("updating task %s from %s to %s: %w", u.TaskID, f, u.To, store.ErrInvalid)
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
			return updatePlan{}, fmt.Errorf("encoding outputs of task %s: %w", u.TaskID, err)
		}
		sets, args = append(sets, "outputs = ?"), append(args, b)
	}
	if u.OutputSHA256 != "" {
		sets, args = append(sets, "output_sha256 = ?"), append(args, u.OutputSHA256)
	}
	if u.OutputBlobs != nil {
		b, err := encBlobs(u.OutputBlobs)
		if err != nil {
			return updatePlan{}, fmt.Errorf("encoding output blobs of task %s: %w", u.TaskID, err)
		}
		sets, args = append(sets, "output_blobs = ?"), append(args, b)
	}
	if u.InputBlobs != nil {
		b, err := encBlobs(u.InputBlobs)
		if err != nil {
			return updatePlan{}, fmt.Errorf("encoding input blobs of task %s: %w", u.TaskID, err)
		}
		sets, args = append(sets, "input_blobs = ?"), append(args, b)
	}
	if u.Inputs != nil {
		b, err := encMap(u.Inputs)
		if err != nil {
			return updatePlan{}, fmt.Errorf("encoding inputs of task %s: %w", u.TaskID, err)
		}
		sets, args = append(sets, "inputs = ?"), append(args, b)
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
	if u.FailureKind != "" && !u.EndAttempt { // a failure without an attempt: the task's own kind
		sets, args = append(sets, "failure_kind = ?"), append(args, string(u.FailureKind))
	}
	if u.Preempted {
		sets = append(sets, "preemptions = preemptions + 1")
	}
	if u.Started {
		at := n
		if !u.StartedAt.IsZero() {
			at = ms(u.StartedAt)
		}
		sets, args = append(sets, "started_at = ?"), append(args, at)
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
	q += " RETURNING " + taskCols
	return updatePlan{u: u, n: n, q: q, args: args}, nil
}

// update applies p in the transaction: the task as updated, or an error wrapping
// ErrConflict (with the task as it is) when the swap lost, having written nothing.
func (tx *wtx) update(p updatePlan) (store.Task, error) {
	u := p.u
	t, err := scanTask(tx.queryRow(p.q, p.args...))
	if errors.Is(err, sql.ErrNoRows) {
		t, err = rowTask(tx.queryRow(getQuery, u.TaskID), u.TaskID)
		if err != nil {
			return t, err
		}
		return t, fmt.Errorf("task %s is %s under lease %d, not %v under lease %d: %w", u.TaskID, t.State, t.LeaseID, u.From, u.LeaseID, store.ErrConflict)
	}
	if err != nil {
		return t, fmt.Errorf("updating task %s: %w", u.TaskID, err)
	}
	if u.OutputBlobs != nil {
		if err := tx.putBlobRefs(u.TaskID, roleOut, u.OutputBlobs); err != nil {
			return t, err
		}
	}
	if u.InputBlobs != nil {
		if err := tx.putBlobRefs(u.TaskID, roleIn, u.InputBlobs); err != nil {
			return t, err
		}
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
		if _, err := tx.exec(`UPDATE attempts SET state = ?, error = ?, retryable = ?, failure_kind = ?, wall_ms = ?, cpu_ms = ?,
 sha256 = ?, finished_at = ?, host = ?, memory_bytes = ?, bytes_in = ?, bytes_out = ? WHERE task_id = ? AND number = ?`,
			string(u.To), errText, retryable, string(u.FailureKind), u.Usage.Wall.Milliseconds(), u.Usage.CPU.Milliseconds(), u.OutputSHA256, p.n,
			u.Usage.Host, u.Usage.MemoryBytes, u.Usage.BytesIn, u.Usage.BytesOut, u.TaskID, t.Attempt); err != nil {
			return t, fmt.Errorf("recording the end of the attempt of task %s: %w", u.TaskID, err)
		}
	}
	return t, nil
}

// Renew implements store.Store.
func (s *Store) Renew(ctx context.Context, agentID string, leases []store.LeaseRef, expires time.Time) (int, error) {
	if len(leases) == 0 {
		return 0, nil
	}
	total := 0
	err := s.write(ctx, func(tx *wtx) error {
		total = 0
		for _, l := range leases {
			res, err := tx.exec(`UPDATE tasks SET lease_expires_at = ? WHERE id = ? AND lease_id = ? AND agent_id = ?
 AND state IN (?, ?)`, ms(expires), l.TaskID, int64(l.LeaseID), agentID, string(store.Leased), string(store.Running))
			if err != nil {
				return fmt.Errorf("renewing lease %d of task %s: %w", l.LeaseID, l.TaskID, err)
			}
			k, _ := res.RowsAffected()
			total += int(k)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("renewing leases of agent %s: %w", agentID, err)
	}
	return total, nil
}

// Expired implements store.Store.
func (s *Store) Expired(ctx context.Context, now time.Time, limit int) ([]store.Task, error) {
	ts, err := s.queryLimit(ctx, expiredSQL, limit, ms(now))
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

// BlobInUse implements store.Store.
func (s *Store) BlobInUse(ctx context.Context, digest string, since time.Time) (bool, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT EXISTS (SELECT 1 FROM task_blobs b JOIN tasks t ON t.id = b.task_id
 WHERE b.digest = ? AND ((b.role = ? AND t.state IN (?, ?, ?, ?)) OR t.finished_at > ?))
 OR EXISTS (SELECT 1 FROM blob_refs WHERE digest = ? AND last_ref > ?)`)
	if err != nil {
		return false, fmt.Errorf("checking whether blob %s is in use: %w", digest, err)
	}
	var used int
	if err := st.QueryRowContext(ctx, digest, roleIn, string(store.Waiting), string(store.Queued), string(store.Leased), string(store.Running),
		ms(since), digest, ms(since)).Scan(&used); err != nil {
		return false, fmt.Errorf("checking whether blob %s is in use: %w", digest, err)
	}
	return used != 0, nil
}

// TouchBlobs implements store.Store.
func (s *Store) TouchBlobs(ctx context.Context, digests []string, at time.Time) error {
	if len(digests) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *wtx) error {
		for _, d := range digests {
			if _, err := tx.exec(`INSERT INTO blob_refs (digest, last_ref) VALUES (?, ?)
 ON CONFLICT (digest) DO UPDATE SET last_ref = max(last_ref, excluded.last_ref)`, d, ms(at)); err != nil {
				return fmt.Errorf("recording a reference to blob %s: %w", d, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording references to %d blobs: %w", len(digests), err)
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
	n := 0
	err := s.write(ctx, func(tx *wtx) error {
		// One statement per table over the same chosen set (the oldest limit tasks):
		// the tasks row goes last, so the subquery sees the same set each time.
		for i, q := range deleteFinishedSQL {
			res, err := tx.exec(q, string(st), ms(before), limit)
			if err != nil {
				return err
			}
			if i == len(deleteFinishedSQL)-1 {
				k, err := res.RowsAffected()
				if err != nil {
					return err
				}
				n = int(k)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("deleting %s tasks finished before %s: %w", st, before.Format(time.RFC3339), err)
	}
	return n, nil
}

// finishedSet selects (state, finished before, limit) the oldest finished tasks' ids.
const finishedSet = `(SELECT id FROM tasks WHERE state = ? AND finished_at > 0 AND finished_at < ? ORDER BY finished_at, id LIMIT ?)`

// deleteFinishedSQL deletes a set of finished tasks and everything stored about them,
// the tasks rows last.
var deleteFinishedSQL = []string{
	`DELETE FROM attempts WHERE task_id IN ` + finishedSet,
	`DELETE FROM task_blobs WHERE task_id IN ` + finishedSet,
	`DELETE FROM task_logs WHERE task_id IN ` + finishedSet,
	`DELETE FROM tasks WHERE id IN ` + finishedSet,
}

// Counts implements store.Store.
func (s *Store) Counts(ctx context.Context) ([]store.Count, error) {
	st, err := s.prepared(&s.rstmts, s.r, `SELECT type, state, COUNT(*) FROM tasks WHERE state IN ('waiting', 'queued', 'leased', 'running') GROUP BY type, state ORDER BY type, state`)
	if err != nil {
		return nil, fmt.Errorf("counting tasks: %w", err)
	}
	rows, err := st.QueryContext(ctx)
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
